/**
 * The CheckpointPolicy CRD against the standalone policy schema: the file in crd/ is the generated one, it
 * is structural as Kubernetes demands, and the same documents are accepted and refused by `kubectl apply`
 * (schema, pruning under strict field validation, CEL rules: checked as the API server does, by
 * e2e/support/kube-api/validate.ts) and by `ferry policy apply` (REST schema plus compilePolicy).
 */
import test from 'ava';
import { Ajv } from 'ajv';
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { isFerryError } from '../../agent/src/errors.js';
import { CHART_CRD_FILE, CRD_FILE, checkpointPolicyCrd, renderCrdYaml, type SchemaNode } from '../src/kube/crd.js';
import { RECORD_CRDS, renderRecordCrdYaml } from '../src/kube/record-crds.js';
import { compilePolicy } from '../src/policy/compile.js';
import { policyDocumentSchema, policySpecSchema } from '../src/policy/schema.js';
import type { PolicySpec } from '../src/policy/types.js';
import { structuralProblems } from '../../e2e/support/kube-api/structural.js';
import { checkCustomResource } from '../../e2e/support/kube-api/validate.js';

const crdSchema = checkpointPolicyCrd().spec.versions[0]?.schema.openAPIV3Schema as unknown as SchemaNode;
const restValidate = new Ajv({ allErrors: true, strict: false }).compile(policyDocumentSchema);

type Doc = Record<string, unknown> & { spec: Record<string, unknown> };

/** `ferry policy apply`: the REST schema, then what compilePolicy checks; the field named by the first refusal. */
function restVerdict(doc: Doc): string | undefined {
  if (!restValidate(doc)) return restValidate.errors?.[0]?.instancePath || '<root>';
  try {
    compilePolicy(doc.spec as unknown as PolicySpec);
    return undefined;
  } catch (err) {
    if (isFerryError(err)) return String(err.details?.field);
    throw err;
  }
}

/** `kubectl apply` (strict field validation): the fields the API server would name, or none. */
const crdVerdict = (doc: Doc) => checkCustomResource(crdSchema, doc).errors.map((e) => e.field);

const base = (): Doc => ({
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'CheckpointPolicy',
  metadata: { name: 'db', namespace: 'shop' },
  spec: { selector: { names: ['db-*'] }, schedule: { every: '30s' } },
});
const withSpec = (patch: Record<string, unknown>): Doc => {
  const doc = base();
  doc.spec = { ...doc.spec, ...patch };
  return doc;
};

test('crd/ and the chart hold the CRD generated from the policy schema (npm run crd)', async (t) => {
  for (const file of [CRD_FILE, CHART_CRD_FILE])
    t.is(await readFile(file, 'utf8'), renderCrdYaml(), `${file}: run \`npm run crd\` and commit`);
  for (const { crd, files } of RECORD_CRDS) {
    for (const file of files) t.is(await readFile(file, 'utf8'), renderRecordCrdYaml(crd), `${file}: run \`npm run crd\` and commit`);
  }
});

test('the CRD schema is structural; the standalone schema as it is would not be', (t) => {
  t.deepEqual(structuralProblems(crdSchema), []);
  for (const { crd } of RECORD_CRDS) {
    const c = crd();
    t.deepEqual(
      structuralProblems(c.spec.versions[0]?.schema.openAPIV3Schema as SchemaNode),
      [],
      `the ${c.spec.names.kind} record CRD too`,
    );
  }
  const raw = structuralProblems({ type: 'object', properties: { spec: policySpecSchema as unknown as SchemaNode } });
  t.true(
    raw.some((p) => p.includes('additionalProperties: false')),
    raw.join('\n'),
  );
  t.true(raw.some((p) => p.includes('must also be specified outside the junctor') || p.includes('not allowed inside a junctor')));
  t.true(
    raw.some((p) => p.includes('every field needs a type')),
    'maxBytes without x-kubernetes-int-or-string',
  );
});

test('status subresource, printer columns and short name are declared', (t) => {
  const crd = checkpointPolicyCrd();
  const v = crd.spec.versions[0];
  t.deepEqual(v?.subresources, { status: {} });
  t.deepEqual(
    v?.additionalPrinterColumns.map((c) => c.name),
    ['Ready', 'Phase', 'Containers', 'Checkpoints', 'Last Run', 'Interval', 'Age'],
  );
  t.true(crd.spec.names.shortNames.includes('cpol'));
  const conditions = (crdSchema.properties?.status?.properties?.conditions ?? {}) as SchemaNode;
  t.is(conditions['x-kubernetes-list-type'], 'map');
});

test('the examples in crd/examples are accepted by both', async (t) => {
  const docs = parseAllDocuments(await readFile('crd/examples/checkpointpolicy.yaml', 'utf8')).map((d) => d.toJS() as Doc);
  t.true(docs.length >= 2);
  for (const doc of docs) {
    t.is(restVerdict(doc), undefined);
    t.deepEqual(crdVerdict(doc), [], String((doc.metadata as { name: string }).name));
  }
});

const accepted: [string, Doc][] = [
  ['every', base()],
  ['cron', withSpec({ schedule: { cron: '*/5 * * * *' } })],
  ['adaptive', withSpec({ schedule: { adaptive: { mtbf: '7d', min: '1m', max: '1h' } } })],
  ['maxBytes as a number', withSpec({ retention: { maxBytes: 1024 } })],
  ['maxBytes with a unit', withSpec({ retention: { maxBytes: '20Gi' } })],
  ['recovery with a replica', withSpec({ storage: { replicas: 1 }, recovery: { after: '30s' } })],
  ['labels only', withSpec({ selector: { labels: { tier: 'data' } } })],
];

for (const [what, doc] of accepted) {
  test(`accepted by both: ${what}`, (t) => {
    t.is(restVerdict(doc), undefined);
    t.deepEqual(crdVerdict(doc), []);
  });
}

/** What each refuses, and the field the API server names. */
const refused: [string, Doc, string][] = [
  ['a selector naming nothing', withSpec({ selector: { runtime: 'runc' } }), 'spec.selector'],
  ['recovery without a replica', withSpec({ recovery: { after: '30s' } }), 'spec.recovery'],
  ['coordinated docker', withSpec({ coordinated: true, selector: { names: ['a'], runtime: 'docker' } }), 'spec.coordinated'],
  ['two schedules at once', withSpec({ schedule: { every: '1m', cron: '* * * * *' } }), 'spec.schedule'],
  ['no schedule kind', withSpec({ schedule: {} }), 'spec.schedule'],
  ['an unknown field', withSpec({ retain: { keepLast: 3 } }), 'spec.retain'],
  ['a duration in words', withSpec({ schedule: { every: '5 minutes' } }), 'spec.schedule.every'],
  ['keepLast 0', withSpec({ retention: { keepLast: 0 } }), 'spec.retention.keepLast'],
  ['an unknown runtime', withSpec({ selector: { names: ['a'], runtime: 'lxc' } }), 'spec.selector.runtime'],
  ['maxBytes with spaces', withSpec({ retention: { maxBytes: '20 GB' } }), 'spec.retention.maxBytes'],
  ['no schedule', { ...base(), spec: { selector: { names: ['a'] } } }, 'spec.schedule'],
  ['an upper-case name', { ...base(), metadata: { name: 'DB' } }, 'metadata.name'],
];

for (const [what, doc, field] of refused) {
  test(`refused by both: ${what}`, (t) => {
    t.not(restVerdict(doc), undefined, 'ferry policy apply accepted it');
    t.true(crdVerdict(doc).includes(field), `kubectl apply: ${JSON.stringify(crdVerdict(doc))}`);
  });
}

test('only the controller refuses what needs units compared (reported in status as Degraded)', (t) => {
  // CEL's duration() knows no days ("7d"), so min <= max and the 1 s floor stay with compilePolicy.
  for (const doc of [
    withSpec({ schedule: { adaptive: { mtbf: '7d', min: '1h', max: '1m' } } }),
    withSpec({ schedule: { every: '500ms' } }),
  ]) {
    t.deepEqual(crdVerdict(doc), []);
    t.not(restVerdict(doc), undefined);
  }
});

test('pruning: a non-strict apply stores the object without the unknown field', (t) => {
  const { errors, pruned } = checkCustomResource(crdSchema, withSpec({ retain: 3 }), false);
  t.deepEqual(errors, []);
  t.false('retain' in (pruned.spec as Record<string, unknown>));
});
