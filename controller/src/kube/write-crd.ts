/** `npm run crd`: writes the CheckpointPolicy CRD into crd/ from the policy schema (crd.ts). */
import { writeFile } from 'node:fs/promises';
import { CRD_FILE, renderCrdYaml } from './crd.js';

await writeFile(CRD_FILE, renderCrdYaml());
console.log(`wrote ${CRD_FILE}`);
