/**
 * The Migration CustomResourceDefinition: the record of a pod migration, written by the controller that
 * runs it, so that `kubectl get migrations` shows what happened, and so that a replica that takes the
 * Lease over finds the migrations its predecessor left running (their journal was in its own store) and
 * settles them. A record, not a request: pods are moved with POST /migrate (docs/kubernetes.md).
 */
import { ferryCrd, renderYaml } from './crd.js';

export const MIGRATION_PLURAL = 'migrations';
export const MIGRATION_KIND = 'Migration';

const name = { type: 'string', maxLength: 253 };

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
    schema: {
      type: 'object',
      description: 'A pod migration as the Ferry controller ran it; written by the controller, read with kubectl.',
      properties: {
        apiVersion: { type: 'string' },
        kind: { type: 'string' },
        metadata: { type: 'object' },
        spec: {
          type: 'object',
          required: ['pod', 'sourceNode', 'targetNode'],
          properties: {
            pod: { type: 'object', required: ['name'], properties: { name } },
            sourceNode: name,
            targetNode: name,
          },
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
      },
    },
  });
}

/** Where the Migration CRD is written: crd/ for kubectl, the chart's crds/ for Helm. */
export const MIGRATION_CRD_FILES = ['crd/migrations.ferry.dev.yaml', 'helm/ferry/crds/migrations.ferry.dev.yaml'];

export function renderMigrationCrdYaml(): string {
  return renderYaml(migrationCrd(), 'controller/src/kube/migration-crd.ts');
}
