/** `npm run crd`: writes the CRDs into crd/ and the chart's crds/ (CheckpointPolicy from the policy schema, crd.ts; the records, record-crds.ts). */
import { writeFile } from 'node:fs/promises';
import { CHART_CRD_FILE, CRD_FILE, renderCrdYaml } from './crd.js';
import { RECORD_CRDS, renderRecordCrdYaml } from './record-crds.js';

const outputs: [string[], () => string][] = [
  [[CRD_FILE, CHART_CRD_FILE], renderCrdYaml],
  ...RECORD_CRDS.map((r): [string[], () => string] => [r.files, () => renderRecordCrdYaml(r.crd)]),
];
for (const [files, render] of outputs) {
  for (const file of files) {
    await writeFile(file, render());
    console.log(`wrote ${file}`);
  }
}
