/** `npm run crd`: writes the CRDs into crd/ and the chart's crds/ (CheckpointPolicy from the policy schema, crd.ts; Migration, migration-crd.ts). */
import { writeFile } from 'node:fs/promises';
import { CHART_CRD_FILE, CRD_FILE, renderCrdYaml } from './crd.js';
import { MIGRATION_CRD_FILES, renderMigrationCrdYaml } from './migration-crd.js';

const outputs: [string[], () => string][] = [
  [[CRD_FILE, CHART_CRD_FILE], renderCrdYaml],
  [MIGRATION_CRD_FILES, renderMigrationCrdYaml],
];
for (const [files, render] of outputs) {
  for (const file of files) {
    await writeFile(file, render());
    console.log(`wrote ${file}`);
  }
}
