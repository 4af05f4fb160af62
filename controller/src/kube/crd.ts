/**
 * The CheckpointPolicy CustomResourceDefinition, derived from the one policy schema the REST API and the
 * CLI validate with (policy/schema.ts), so that `kubectl apply` and `ferry policy apply` accept the same
 * documents. Kubernetes wants a structural schema (structural.ts): unknown fields are pruned, or refused by
 * kubectl's strict field validation, instead of `additionalProperties: false`; a oneOf's fields are
 * declared around it; an integer-or-string says so. What JSON schema cannot say (names or labels, a
 * recovery needs a replica) is written as CEL rules, as compile.ts checks it in standalone mode.
 * `npm run crd` writes crd/checkpointpolicies.ferry.dev.yaml from this; a test keeps the two equal.
 */
import { POLICY_NAME_PATTERN, policySpecSchema } from '../policy/schema.js';
import { POLICY_API_VERSION, POLICY_KIND } from '../policy/types.js';
import { stringify } from 'yaml';

const [GROUP, VERSION] = POLICY_API_VERSION.split('/') as [string, string];
export const CRD_GROUP = GROUP;
export const CRD_VERSION = VERSION;
export const POLICY_PLURAL = 'checkpointpolicies';

/** The part of OpenAPI v3 schemas (with Kubernetes' extensions) that the CRD uses. */
export interface SchemaNode {
  type?: string;
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
  items?: SchemaNode;
  required?: string[];
  oneOf?: SchemaNode[];
  anyOf?: SchemaNode[];
  allOf?: SchemaNode[];
  not?: SchemaNode;
  enum?: unknown[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  [key: string]: unknown;
}

/** A JSON schema as policy/schema.ts writes it, turned into the structural form Kubernetes accepts. */
export function toStructural(input: unknown): SchemaNode {
  const node = structuredClone(input) as SchemaNode;
  if (node.additionalProperties === false) delete node.additionalProperties;
  if (node.oneOf) {
    // The branches keep only which field they require; the fields themselves move out to the node.
    node.properties ??= {};
    for (const branch of node.oneOf) Object.assign(node.properties, branch.properties);
    node.oneOf = node.oneOf.map((branch) => ({ required: branch.required ?? [] }));
  }
  if (node.anyOf && !node.type && node.anyOf.every((b) => b.type === 'integer' || b.type === 'string')) {
    node['x-kubernetes-int-or-string'] = true;
  }
  if (node.properties) {
    node.properties = Object.fromEntries(Object.entries(node.properties).map(([k, v]) => [k, toStructural(v)]));
  }
  if (typeof node.additionalProperties === 'object') node.additionalProperties = toStructural(node.additionalProperties);
  if (node.items) node.items = toStructural(node.items);
  return node;
}

/** The rules of compile.ts that a schema cannot state, in CEL; the messages say what compile.ts says. */
const SPEC_RULES = [
  {
    rule: 'has(self.selector.names) || has(self.selector.labels)',
    message: 'spec.selector: say which containers, by names or by labels (or both)',
    fieldPath: '.selector',
  },
  {
    rule: '!has(self.recovery) || (has(self.storage) && has(self.storage.replicas) && self.storage.replicas >= 1)',
    message: 'spec.recovery needs spec.storage.replicas >= 1: a lost node takes its own checkpoints with it',
    fieldPath: '.recovery',
  },
  {
    rule: "!(has(self.coordinated) && self.coordinated) || !has(self.selector.runtime) || self.selector.runtime != 'docker'",
    message: 'spec.coordinated: docker containers cannot be held frozen while checkpointed (containerd refuses)',
    fieldPath: '.coordinated',
  },
];

const timestamp = { type: 'string', format: 'date-time' };

/** metav1.Condition, as every Kubernetes API writes it. */
const conditionSchema = {
  type: 'object',
  required: ['type', 'status', 'lastTransitionTime', 'reason', 'message'],
  properties: {
    type: { type: 'string', maxLength: 316 },
    status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
    observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
    lastTransitionTime: timestamp,
    reason: { type: 'string', maxLength: 1024, pattern: '^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$' },
    message: { type: 'string', maxLength: 32768 },
  },
};

/** The standalone PolicyStatus (policy/types.ts) plus the conditions and observedGeneration of Kubernetes. */
const statusSchema = {
  type: 'object',
  properties: {
    observedGeneration: { type: 'integer', format: 'int64' },
    conditions: {
      type: 'array',
      items: conditionSchema,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    },
    phase: { type: 'string', enum: ['Active', 'Suspended', 'Failing'] },
    lastRunAt: timestamp,
    nextRunAt: timestamp,
    lastSuccessAt: timestamp,
    lastError: {
      type: 'object',
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        at: { type: 'string' },
        criuLog: { type: 'array', items: { type: 'string' } },
      },
    },
    consecutiveFailures: { type: 'integer' },
    interval: {
      type: 'object',
      properties: { ms: { type: 'integer' }, reason: { type: 'string' }, costMs: { type: 'number' }, mtbfMs: { type: 'number' } },
    },
    cost: { type: 'object', properties: { frozenMs: { type: 'number' }, totalMs: { type: 'number' } } },
    containers: { type: 'integer' },
    checkpoints: { type: 'integer' },
    incremental: { type: 'string' },
  },
};

/** A namespaced CRD of Ferry's group, with a status subresource, in the one version Ferry serves. */
export function ferryCrd(def: {
  plural: string;
  singular: string;
  kind: string;
  shortName: string;
  printerColumns: { name: string; type: string; jsonPath: string; priority?: number }[];
  schema: SchemaNode;
}) {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${def.plural}.${CRD_GROUP}` },
    spec: {
      group: CRD_GROUP,
      scope: 'Namespaced',
      names: {
        plural: def.plural,
        singular: def.singular,
        kind: def.kind,
        listKind: `${def.kind}List`,
        shortNames: [def.shortName],
        categories: ['ferry'],
      },
      versions: [
        {
          name: CRD_VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [...def.printerColumns, { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' }],
          schema: { openAPIV3Schema: def.schema },
        },
      ],
    },
  };
}

export function checkpointPolicyCrd() {
  return ferryCrd({
    plural: POLICY_PLURAL,
    singular: 'checkpointpolicy',
    kind: POLICY_KIND,
    shortName: 'cpol',
    printerColumns: [
      { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
      { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
      { name: 'Containers', type: 'integer', jsonPath: '.status.containers' },
      { name: 'Checkpoints', type: 'integer', jsonPath: '.status.checkpoints' },
      { name: 'Last Run', type: 'date', jsonPath: '.status.lastRunAt' },
      { name: 'Interval', type: 'string', priority: 1, jsonPath: '.status.interval.reason' },
    ],
    schema: {
      type: 'object',
      description: 'Which containers to checkpoint, how often, and how many checkpoints to keep (docs/policies.md).',
      required: ['spec'],
      properties: {
        apiVersion: { type: 'string' },
        kind: { type: 'string' },
        metadata: {
          type: 'object',
          properties: { name: { type: 'string', pattern: POLICY_NAME_PATTERN } },
        },
        spec: { ...toStructural(policySpecSchema), 'x-kubernetes-validations': SPEC_RULES },
        status: statusSchema,
      },
    },
  });
}

export const CRD_FILE = 'crd/checkpointpolicies.ferry.dev.yaml';
/** The chart's copy: Helm installs a chart's crds/ as they are, before its templates. */
export const CHART_CRD_FILE = 'helm/ferry/crds/checkpointpolicies.ferry.dev.yaml';

/** A CRD as the files in crd/ and the chart hold it; `source` is the module that defines it. */
export function renderYaml(crd: object, source: string): string {
  return `# Generated from ${source} by \`npm run crd\`; edit the schema there, not here.\n${stringify(crd, { lineWidth: 0 })}`;
}

/** The CheckpointPolicy CRD as the file in crd/ holds it. */
export function renderCrdYaml(): string {
  return renderYaml(checkpointPolicyCrd(), 'controller/src/kube/crd.ts');
}
