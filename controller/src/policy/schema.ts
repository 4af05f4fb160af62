/**
 * The CheckpointPolicy document's JSON schema: the controller's API validates with it, `ferry policy
 * apply` sends files that it judges, and the CRD's openAPIV3Schema is derived from it (kube/crd.ts).
 * Durations and sizes are strings with the units people write; policy/units.ts turns them into numbers.
 */
import { RUNTIME_NAMES } from '../../../agent/src/runtimes/types.js';
import { DURATION_PATTERN, SIZE_PATTERN } from './units.js';
import { POLICY_API_VERSION, POLICY_KIND } from './types.js';

export const POLICY_NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$';

const duration = { type: 'string', pattern: DURATION_PATTERN } as const;
const nodeName = { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,62}$' } as const;

export const policySpecSchema = {
  type: 'object',
  required: ['selector', 'schedule'],
  additionalProperties: false,
  properties: {
    selector: {
      type: 'object',
      additionalProperties: false,
      // "names or labels" is checked by compilePolicy, whose error says so; an anyOf here would report
      // only its first branch ("must have required property 'names'").
      properties: {
        names: { type: 'array', minItems: 1, items: { type: 'string', pattern: '^[a-zA-Z0-9*][a-zA-Z0-9_.*-]{0,127}$' } },
        labels: { type: 'object', minProperties: 1, additionalProperties: { type: 'string', maxLength: 253 } },
        nodes: { type: 'array', minItems: 1, items: nodeName },
        runtime: { type: 'string', enum: [...RUNTIME_NAMES] },
        namespace: { type: 'string', pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$' },
      },
    },
    schedule: {
      type: 'object',
      oneOf: [
        { required: ['every'], additionalProperties: false, properties: { every: duration } },
        { required: ['cron'], additionalProperties: false, properties: { cron: { type: 'string', minLength: 9, maxLength: 200 } } },
        {
          required: ['adaptive'],
          additionalProperties: false,
          properties: {
            adaptive: {
              type: 'object',
              required: ['mtbf', 'min', 'max'],
              additionalProperties: false,
              properties: { mtbf: duration, min: duration, max: duration, formula: { type: 'string', enum: ['young', 'daly'] } },
            },
          },
        },
      ],
    },
    incremental: {
      type: 'object',
      required: ['fullEvery'],
      additionalProperties: false,
      properties: { fullEvery: { type: 'integer', minimum: 1, maximum: 1000 } },
    },
    retention: {
      type: 'object',
      additionalProperties: false,
      properties: {
        keepLast: { type: 'integer', minimum: 1, maximum: 10_000 },
        maxAge: duration,
        maxBytes: {
          anyOf: [
            { type: 'integer', minimum: 1 },
            { type: 'string', pattern: SIZE_PATTERN },
          ],
        },
      },
    },
    storage: {
      type: 'object',
      additionalProperties: false,
      properties: { replicas: { type: 'integer', minimum: 0, maximum: 3 } },
    },
    recovery: {
      type: 'object',
      required: ['after'],
      additionalProperties: false,
      properties: { after: duration },
    },
    coordinated: { type: 'boolean' },
    leaveRunning: { type: 'boolean' },
    suspend: { type: 'boolean' },
  },
} as const;

export const policyDocumentSchema = {
  type: 'object',
  required: ['metadata', 'spec'],
  additionalProperties: false,
  properties: {
    apiVersion: { type: 'string', enum: [POLICY_API_VERSION] },
    kind: { type: 'string', enum: [POLICY_KIND] },
    metadata: {
      type: 'object',
      required: ['name'],
      // Kubernetes tooling adds namespace, labels, annotations...: accepted and not kept in standalone mode.
      additionalProperties: true,
      properties: { name: { type: 'string', pattern: POLICY_NAME_PATTERN } },
    },
    spec: policySpecSchema,
    status: { type: 'object' },
  },
} as const;
