/** Policy documents: what the schema and compile step refuse (with the field named), selection, retention. */
import test from 'ava';
import { Ajv } from 'ajv';
import { fileURLToPath } from 'node:url';
import { isFerryError } from '../../agent/src/errors.js';
import { readPolicyFile } from '../../cli/src/policy-commands.js';
import type { ContainerInfo } from '../../agent/src/runtimes/types.js';
import { CRI, compilePolicy, selects } from '../src/policy/compile.js';
import { checkpointId } from '../src/policy/checkpointer.js';
import { checkpointsToDelete, type RetainedCheckpoint } from '../src/policy/retention.js';
import { policyDocumentSchema } from '../src/policy/schema.js';
import type { PolicySpec } from '../src/policy/types.js';
import { parseDuration, parseSize } from '../src/policy/units.js';

const validate = new Ajv({ allErrors: true }).compile(policyDocumentSchema);
const doc = (spec: unknown) => ({ apiVersion: 'ferry.dev/v1alpha1', kind: 'CheckpointPolicy', metadata: { name: 'db' }, spec });
const fieldOf = (f: () => unknown) => {
  try {
    f();
  } catch (err) {
    return isFerryError(err) ? err.details?.field : String(err);
  }
  return undefined;
};

test('schema: a complete policy passes; two schedules, a bad duration or name do not', (t) => {
  const good = {
    selector: { names: ['db-*'], labels: { tier: 'data' }, nodes: ['a'], runtime: 'podman' },
    schedule: { adaptive: { mtbf: '24h', min: '1m', max: '1h', formula: 'young' } },
    retention: { keepLast: 3, maxAge: '7d', maxBytes: '10Gi' },
    leaveRunning: true,
  };
  t.true(validate(doc(good)), JSON.stringify(validate.errors));
  t.false(validate(doc({ ...good, schedule: { every: '5m', adaptive: good.schedule.adaptive } })));
  t.false(validate(doc({ ...good, schedule: { every: '5 minutes' } })));
  t.false(validate(doc({ ...good, retention: { keepLast: 0 } })));
  t.false(validate({ ...doc(good), metadata: { name: 'Bad_Name' } }));
});

test('units: durations and sizes as written', (t) => {
  t.is(parseDuration('500ms', 'f'), 500);
  t.is(parseDuration('2s', 'f'), 2000);
  t.is(parseDuration('1.5h', 'f'), 5_400_000);
  t.is(parseSize('10Gi', 'f'), 10 * 2 ** 30);
  t.is(parseSize('2G', 'f'), 2e9);
  t.is(parseSize(4096, 'f'), 4096);
  t.is(
    fieldOf(() => parseDuration('soon', 'spec.schedule.every')),
    'spec.schedule.every',
  );
});

test('compile: min > max, an interval under a second, a selector naming nothing and coordinated docker policies are refused with the field named', (t) => {
  const base: PolicySpec = { selector: { names: ['x'] }, schedule: { every: '2s' } };
  t.deepEqual(compilePolicy(base).schedule, { kind: 'every', everyMs: 2000 });
  t.true(compilePolicy(base).leaveRunning);
  t.is(
    fieldOf(() => compilePolicy({ ...base, schedule: { every: '200ms' } })),
    'spec.schedule.every',
  );
  t.is(
    fieldOf(() => compilePolicy({ ...base, schedule: { adaptive: { mtbf: '1d', min: '1h', max: '5m' } } })),
    'spec.schedule.adaptive.max',
  );
  t.is(
    fieldOf(() => compilePolicy({ ...base, selector: { names: ['x'], runtime: 'docker' }, coordinated: true })),
    'spec.coordinated',
  );
  t.deepEqual(compilePolicy({ ...base, retention: { maxAge: '1h', maxBytes: '1Ki' } }).retention, { maxAgeMs: 3_600_000, maxBytes: 1024 });
});

const container = (over: Partial<ContainerInfo>): ContainerInfo => ({
  id: 'c1',
  name: 'db-1',
  runtime: 'podman',
  state: 'running',
  ...over,
});

test('selects: names with *, labels all matching, node and runtime filters, running only', (t) => {
  t.true(selects({ names: ['db-*'] }, 'a', container({})));
  t.false(selects({ names: ['db'] }, 'a', container({})));
  t.false(selects({ names: ['db.1'] }, 'a', container({ name: 'dbx1' })), 'a dot is literal, not any character');
  t.true(selects({ labels: { tier: 'data' } }, 'a', container({ labels: { tier: 'data', x: 'y' } })));
  t.false(selects({ labels: { tier: 'data', zone: 'b' } }, 'a', container({ labels: { tier: 'data' } })));
  t.false(selects({ names: ['db-*'], nodes: ['b'] }, 'a', container({})));
  t.false(selects({ names: ['db-*'], runtime: 'runc' }, 'a', container({})));
  t.false(selects({ names: ['db-*'] }, 'a', container({ state: 'stopped' })));
});

test('selects, namespaced (Kubernetes mode): only application containers of pods in its namespace, by pod or container name', (t) => {
  const cri = (ns: string, pod: string, name: string, type = 'container') =>
    container({
      name: 'b3f1c0ffee',
      labels: { [CRI.namespace]: ns, [CRI.pod]: pod, [CRI.container]: name, [CRI.type]: type, tier: 'data' },
    });
  t.true(selects({ namespace: 'shop', names: ['orders-*'] }, 'a', cri('shop', 'orders-7f9c', 'db')));
  t.true(selects({ namespace: 'shop', names: ['db'] }, 'a', cri('shop', 'orders-7f9c', 'db')), "by the pod's container name");
  t.false(selects({ namespace: 'shop', names: ['orders-*'] }, 'a', cri('billing', 'orders-7f9c', 'db')), 'another namespace');
  t.false(selects({ namespace: 'shop', names: ['orders-*'] }, 'a', cri('shop', 'orders-7f9c', '', 'sandbox')), "the pod's sandbox");
  t.false(selects({ namespace: 'shop', names: ['b3f1*'] }, 'a', cri('shop', 'orders-7f9c', 'db')), "not by containerd's id");
  t.false(selects({ namespace: 'shop', labels: { tier: 'data' } }, 'a', container({ labels: { tier: 'data' } })), 'not a pod at all');
  t.true(selects({ names: ['b3f1*'] }, 'a', cri('billing', 'x', 'y')), 'standalone selectors see every container by its own name');
});

test("selects, namespaced with the API server's pods at hand: labels are the pod's, looked up by namespace and pod name", (t) => {
  const cri = (ns: string, pod: string) =>
    container({ labels: { [CRI.namespace]: ns, [CRI.pod]: pod, [CRI.container]: 'db', [CRI.type]: 'container', tier: 'cache' } });
  const pods: Record<string, Record<string, string>> = {
    'shop/orders-7f9c': { app: 'orders', tier: 'data' },
    'shop/web-1': { app: 'web' },
  };
  const lookup = (ns: string, pod: string) => pods[`${ns}/${pod}`];
  t.true(selects({ namespace: 'shop', labels: { tier: 'data' } }, 'a', cri('shop', 'orders-7f9c'), lookup));
  t.false(selects({ namespace: 'shop', labels: { tier: 'cache' } }, 'a', cri('shop', 'orders-7f9c'), lookup), "not the container's own");
  t.false(selects({ namespace: 'shop', labels: { app: 'orders' } }, 'a', cri('shop', 'web-1'), lookup), 'another pod');
  t.false(selects({ namespace: 'shop', labels: { app: 'orders' } }, 'a', cri('shop', 'gone-0'), lookup), 'a pod the API does not list');
  t.true(selects({ namespace: 'shop', names: ['orders-*'], labels: { app: 'orders' } }, 'a', cri('shop', 'orders-7f9c'), lookup));
  t.true(selects({ labels: { tier: 'cache' } }, 'a', cri('shop', 'orders-7f9c'), lookup), 'standalone selectors keep container labels');
});

test("checkpoint ids are ones agents accept, also for a CheckpointPolicy object's namespaced name", (t) => {
  for (const policy of ['orders-db', 'shop.orders-db', `${'n'.repeat(63)}.${'p'.repeat(40)}`]) {
    t.regex(checkpointId(policy, Date.UTC(2026, 10, 27)), /^[a-z0-9][a-z0-9_-]{0,63}$/, policy);
  }
});

const at = (minutesAgo: number) => new Date(Date.UTC(2026, 10, 26, 12, 0) - minutesAgo * 60_000).toISOString();
const NOW = Date.UTC(2026, 10, 26, 12, 0);
const cp = (id: string, minutesAgo: number, bytes = 100, parent?: string): RetainedCheckpoint => ({
  id,
  createdAt: at(minutesAgo),
  bytes,
  ...(parent ? { parent } : {}),
});

test('retention: keepLast keeps the newest, oldest go first in the order children before parents', (t) => {
  const all = [cp('c1', 40), cp('c2', 30), cp('c3', 20), cp('c4', 10), cp('c5', 0)];
  t.deepEqual(checkpointsToDelete(all, { keepLast: 3 }, NOW), ['c2', 'c1']);
  t.deepEqual(checkpointsToDelete(all, {}, NOW), []);
});

test('retention: maxAge and maxBytes narrow further, but the newest checkpoint always stays', (t) => {
  const all = [cp('c1', 40), cp('c2', 30), cp('c3', 20)];
  t.deepEqual(checkpointsToDelete(all, { maxAgeMs: 25 * 60_000 }, NOW), ['c2', 'c1']);
  t.deepEqual(checkpointsToDelete(all, { maxAgeMs: 60_000 }, NOW), ['c2', 'c1'], 'all too old: the newest is kept');
  t.deepEqual(checkpointsToDelete(all, { maxBytes: 250 }, NOW), ['c1']);
  t.deepEqual(checkpointsToDelete(all, { maxBytes: 1 }, NOW), ['c2', 'c1']);
});

test('retention: a parent that a kept checkpoint builds on is never deleted, and counts toward maxBytes', (t) => {
  // full f1 <- pre-dump p1 <- full-with-parent d1; then f2 on its own.
  const all = [cp('f1', 40, 100), cp('p1', 30, 10, 'f1'), cp('d1', 20, 10, 'p1'), cp('f2', 10, 100)];
  t.deepEqual(checkpointsToDelete(all, { keepLast: 2 }, NOW), [], 'keepLast 2 keeps f2 and d1, and d1 needs p1 and f1');
  t.deepEqual(checkpointsToDelete(all, { keepLast: 1 }, NOW), ['d1', 'p1', 'f1']);
  t.deepEqual(checkpointsToDelete(all, { maxBytes: 200 }, NOW), ['d1', 'p1', 'f1'], 'd1 with its parents would be 220 bytes on top of f2');
});

test('retention: a memory-only base is not counted by keepLast and goes when no kept checkpoint needs it', (t) => {
  const base = (id: string, minutesAgo: number): RetainedCheckpoint => ({ ...cp(id, minutesAgo, 100), memoryOnly: true });
  // Two chains: b1 <- h1 <- i1, b2 <- h2.
  const all = [base('b1', 50), cp('h1', 49, 5, 'b1'), cp('i1', 40, 5, 'h1'), base('b2', 30), cp('h2', 29, 5, 'b2')];
  t.deepEqual(checkpointsToDelete(all, { keepLast: 2 }, NOW), [], 'h2 and i1 kept; i1 needs h1 and b1');
  t.deepEqual(checkpointsToDelete(all, { keepLast: 1 }, NOW), ['i1', 'h1', 'b1']);
});

test('the example policies in crd/examples are valid and compile', async (t) => {
  const file = fileURLToPath(new URL('../../crd/examples/checkpointpolicy.yaml', import.meta.url));
  const docs = await readPolicyFile(file);
  t.is(docs.length, 2);
  for (const d of docs) {
    t.true(validate(d), `${d.metadata.name}: ${JSON.stringify(validate.errors)}`);
    t.notThrows(() => compilePolicy(d.spec));
  }
});
