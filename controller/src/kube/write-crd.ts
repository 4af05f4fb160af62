/** `npm run crd`: writes the CheckpointPolicy CRD into crd/ and the chart's crds/ from the policy schema (crd.ts). */
import { writeFile } from 'node:fs/promises';
import { CHART_CRD_FILE, CRD_FILE, renderCrdYaml } from './crd.js';

for (const file of [CRD_FILE, CHART_CRD_FILE]) {
  await writeFile(file, renderCrdYaml());
  console.log(`wrote ${file}`);
}
