/**
 * CustomResourceDefinitions of records: objects the controller writes so that `kubectl get` shows what
 * happened, never requests. `Migration`: a pod migration as it ran, with its journal, from which a replica
 * taking the Lease over settles the ones its predecessor left running (every replica keeps its own store).
 * `Checkpoint`: a checkpoint a CheckpointPolicy keeps, owned by that policy (the API server's garbage
 * collector deletes it with the policy; retention deletes it with the checkpoint).
 */
import { ferryCrd, renderYaml, type SchemaNode } from './crd.js';

export const MIGRATION_PLURAL = 'migrations';
export const MIGRATION_KIND = 'Migration';
export const CHECKPOINT_PLURAL = 'checkpoints';
export const CHECKPOINT_KIND = 'Checkpoint';

const name = { type: 'string', maxLength: 253 };

/** The object schema every record shares: what the controller writes, described for `kubectl explain`. */
const recordSchema = (description: string, properties: Record<string, SchemaNode>): SchemaNode => ({
  type: 'object',
  description,
  properties: { apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { type: 'object' }, ...properties },
});

export function migrationCrd() {
  return ferryCrd({
    plural: MIGRATION_PLURAL,
    singular: 'migration',
    kind: MIGRATION_KIND,
    shortName: 'fmig',
    printerColumns: [
      { name: 'Status', type: 'string', jsonPath: '.status.phase' },
      { name: 'Step', type: 'string', jsonPath: '.status.step' },
      { name: 'Pod', type: 'string', jsonPath: '.spec.pod.name' },
      { name: 'From', type: 'string', jsonPath: '.spec.sourceNode' },
      { name: 'To', type: 'string', jsonPath: '.spec.targetNode' },
      { name: 'Downtime ms', type: 'integer', jsonPath: '.status.downtimeMs' },
      { name: 'Replacement', type: 'string', priority: 1, jsonPath: '.status.replacement' },
      { name: 'Message', type: 'string', priority: 1, jsonPath: '.status.message' },
    ],
    schema: recordSchema('A pod migration as the Ferry controller ran it; written by the controller, read with kubectl.', {
      spec: {
        type: 'object',
        required: ['pod', 'sourceNode', 'targetNode'],
        properties: { pod: { type: 'object', required: ['name'], properties: { name } }, sourceNode: name, targetNode: name },
      },
      status: {
        type: 'object',
        properties: {
          phase: { type: 'string', enum: ['running', 'succeeded', 'failed', 'cancelled'] },
          step: { type: 'string' },
          replacement: name,
          downtimeMs: { type: 'integer' },
          message: { type: 'string', maxLength: 32768 },
          record: {
            type: 'object',
            description: "the controller's journal of the migration, from which another replica settles it",
            'x-kubernetes-preserve-unknown-fields': true,
          },
        },
      },
    }),
  });
}

export function checkpointCrd() {
  return ferryCrd({
    plural: CHECKPOINT_PLURAL,
    singular: 'checkpoint',
    kind: CHECKPOINT_KIND,
    shortName: 'fck',
    printerColumns: [
      { name: 'Policy', type: 'string', jsonPath: '.spec.policy' },
      { name: 'Container', type: 'string', jsonPath: '.spec.container' },
      { name: 'Node', type: 'string', jsonPath: '.spec.node' },
      { name: 'Copies', type: 'string', priority: 1, jsonPath: '.spec.copies' },
      { name: 'Parent', type: 'string', priority: 1, jsonPath: '.spec.parent' },
    ],
    schema: recordSchema('A checkpoint a CheckpointPolicy keeps; written by the Ferry controller, read with kubectl.', {
      spec: {
        type: 'object',
        required: ['policy', 'node', 'container'],
        properties: {
          policy: name,
          node: name,
          container: name,
          runtime: { type: 'string', enum: ['runc', 'podman', 'docker'] },
          parent: name,
          copies: { type: 'array', items: name },
          run: name,
        },
      },
    }),
  });
}

/** Each record CRD and where `npm run crd` writes it: crd/ for kubectl, the chart's crds/ for Helm. */
export const RECORD_CRDS = [
  { crd: migrationCrd, files: ['crd/migrations.ferry.dev.yaml', 'helm/ferry/crds/migrations.ferry.dev.yaml'] },
  { crd: checkpointCrd, files: ['crd/checkpoints.ferry.dev.yaml', 'helm/ferry/crds/checkpoints.ferry.dev.yaml'] },
];

export const renderRecordCrdYaml = (crd: () => object) => renderYaml(crd(), 'controller/src/kube/record-crds.ts');
