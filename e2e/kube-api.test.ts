/**
 * The Kubernetes API stand-in (e2e/support/kube-api) against the real client Ferry's controller uses,
 * @kubernetes/client-node: what the controller relies on must behave as on a real API server, or the
 * controller's tests against the stand-in would prove nothing. CheckpointPolicy objects go through the
 * real CRD (crd/checkpointpolicies.ferry.dev.yaml's source). Tests that compact the history run serially:
 * compaction would expire the others' watches.
 */
import {
  ApiException,
  CoordinationV1Api,
  CustomObjectsApi,
  type KubernetesObject,
  makeInformer,
  PatchStrategy,
  setHeaderOptions,
  Watch,
} from '@kubernetes/client-node';
import test from 'ava';
import { CRD_GROUP, CRD_VERSION, checkpointPolicyCrd, POLICY_PLURAL } from '../controller/src/kube/crd.js';
import { checkpointPolicy, servePolicies } from './support/kube-api/policies.js';
import { type KubeApiStandIn, startKubeApi } from './support/kube-api/server.js';

interface Policy {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; resourceVersion?: string; generation?: number; finalizers?: string[]; deletionTimestamp?: string };
  spec: Record<string, unknown>;
  status?: Record<string, unknown>;
}

let api: KubeApiStandIn;
let custom: CustomObjectsApi;
const NS = 'shop';
const at = { group: CRD_GROUP, version: CRD_VERSION, namespace: NS, plural: POLICY_PLURAL };

test.before(async () => {
  api = await startKubeApi();
  servePolicies(api);
  custom = api.kubeConfig(NS).makeApiClient(CustomObjectsApi);
});

test.after.always(async () => {
  await api?.close();
});

const policy = (name: string, spec: Record<string, unknown> = {}): Policy => checkpointPolicy(name, spec);

const create = (p: Policy) => custom.createNamespacedCustomObject({ ...at, body: p }) as Promise<Policy>;
const get = (name: string) => custom.getNamespacedCustomObject({ ...at, name }) as Promise<Policy>;
const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => 200,
    (err: unknown) => (err instanceof ApiException ? err.code : Number.NaN),
  );
const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

test('a CRD whose schema is not structural is refused, as Kubernetes refuses it', (t) => {
  const crd = checkpointPolicyCrd();
  const bad = structuredClone(crd) as unknown as {
    spec: { versions: { schema: { openAPIV3Schema: { properties: Record<string, unknown> } } }[] };
  };
  (bad.spec.versions[0] as (typeof bad.spec.versions)[0]).schema.openAPIV3Schema.properties.spec = {
    type: 'object',
    additionalProperties: false,
  };
  t.throws(() => api.registerCrd(bad as unknown as Parameters<KubeApiStandIn['registerCrd']>[0]), { message: /not structural/ });
});

test('create, get, list; a second create of the same name is 409; the token is required', async (t) => {
  const made = await create(policy('p-create'));
  t.is(made.metadata.generation, 1);
  t.truthy(made.metadata.resourceVersion);
  t.deepEqual((await get('p-create')).spec, made.spec);
  const list = (await custom.listNamespacedCustomObject(at)) as { metadata: { resourceVersion: string }; items: Policy[] };
  t.true(list.items.some((p) => p.metadata.name === 'p-create'));
  t.true(Number(list.metadata.resourceVersion) >= Number(made.metadata.resourceVersion));
  t.is(await codeOf(create(policy('p-create'))), 409);
  const res = await fetch(`${api.url}/apis/${CRD_GROUP}/${CRD_VERSION}/namespaces/${NS}/${POLICY_PLURAL}`);
  t.is(res.status, 401);
});

test('an invalid policy is 422 Invalid, naming the fields as the API server does (schema and CEL)', async (t) => {
  const err = await t.throwsAsync(create(policy('p-bad', { selector: { runtime: 'runc' }, schedule: { every: '5 minutes' } })));
  t.true(err instanceof ApiException);
  const body = JSON.parse(String((err as ApiException<string>).body)) as { reason: string; details: { causes: { field: string }[] } };
  t.is(body.reason, 'Invalid');
  t.deepEqual(body.details.causes.map((c) => c.field).sort(), ['spec.schedule.every']);
  // CEL rules run only on objects that pass the schema, as on a real API server.
  const cel = await t.throwsAsync(create(policy('p-bad2', { selector: { runtime: 'runc' } })));
  t.regex(String((cel as ApiException<string>).body), /spec\.selector.*names or by labels/);
});

test('status subresource: status writes go through /status only; generation counts spec changes', async (t) => {
  const made = await create(policy('p-status'));
  const withStatus = (await custom.replaceNamespacedCustomObjectStatus({
    ...at,
    name: 'p-status',
    body: { ...made, status: { phase: 'Active', observedGeneration: 1 } },
  })) as Policy;
  t.deepEqual(withStatus.status, { phase: 'Active', observedGeneration: 1 });
  t.is(withStatus.metadata.generation, 1, 'a status write is not a new generation');

  // A replace of the object keeps the stored status whatever the body says.
  const replaced = (await custom.replaceNamespacedCustomObject({
    ...at,
    name: 'p-status',
    body: { ...withStatus, spec: { ...withStatus.spec, suspend: true }, status: { phase: 'Failing' } },
  })) as Policy;
  t.is(replaced.status?.phase, 'Active');
  t.is(replaced.metadata.generation, 2);
});

test('optimistic concurrency: an update with a stale resourceVersion is 409 Conflict', async (t) => {
  const made = await create(policy('p-conflict'));
  await custom.patchNamespacedCustomObject({ ...at, name: 'p-conflict', body: { spec: { suspend: true } } }, merge);
  const stale = { ...made, spec: { ...made.spec, leaveRunning: false } };
  t.is(await codeOf(custom.replaceNamespacedCustomObject({ ...at, name: 'p-conflict', body: stale })), 409);
});

test('merge patch and JSON patch', async (t) => {
  await create(policy('p-patch', { retention: { keepLast: 3 } }));
  const merged = (await custom.patchNamespacedCustomObject(
    { ...at, name: 'p-patch', body: { spec: { retention: { keepLast: null, maxAge: '7d' } } } },
    merge,
  )) as Policy;
  t.deepEqual(merged.spec.retention, { maxAge: '7d' });
  const patched = (await custom.patchNamespacedCustomObject(
    {
      ...at,
      name: 'p-patch',
      body: [
        { op: 'test', path: '/spec/retention/maxAge', value: '7d' },
        { op: 'replace', path: '/spec/schedule', value: { cron: '*/5 * * * *' } },
      ],
    },
    setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
  )) as Policy;
  t.deepEqual(patched.spec.schedule, { cron: '*/5 * * * *' });
  const failedTest = custom.patchNamespacedCustomObject(
    { ...at, name: 'p-patch', body: [{ op: 'test', path: '/spec/retention/maxAge', value: '1d' }] },
    setHeaderOptions('Content-Type', PatchStrategy.JsonPatch),
  );
  t.is(await codeOf(failedTest), 422);
});

test('finalizers: a delete marks the object, the last finalizer removed ends it', async (t) => {
  await create({ ...policy('p-final'), metadata: { name: 'p-final', finalizers: ['ferry.dev/checkpoints'] } });
  await custom.deleteNamespacedCustomObject({ ...at, name: 'p-final' });
  const marked = await get('p-final');
  t.truthy(marked.metadata.deletionTimestamp);
  await custom.patchNamespacedCustomObject({ ...at, name: 'p-final', body: { metadata: { finalizers: null } } }, merge);
  t.is(await codeOf(get('p-final')), 404);
});

test.serial(
  'informer: adds, updates and deletes arrive; after compaction and a dropped watch it lists again (410) and misses nothing',
  async (t) => {
    const kc = api.kubeConfig(NS);
    const path = `/apis/${CRD_GROUP}/${CRD_VERSION}/namespaces/${NS}/${POLICY_PLURAL}`;
    const informer = makeInformer<KubernetesObject>(kc, path, () => custom.listNamespacedCustomObject(at) as never);
    const seen: string[] = [];
    const waiters: [string, () => void][] = [];
    const record = (what: string) => (o: KubernetesObject) => {
      seen.push(`${what} ${o.metadata?.name}`);
      for (const [want, resolve] of waiters) if (want === `${what} ${o.metadata?.name}`) resolve();
    };
    const next = (want: string) =>
      seen.includes(want) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push([want, resolve]));
    informer.on('add', record('add'));
    informer.on('update', record('update'));
    informer.on('delete', record('delete'));
    await informer.start();
    try {
      await create(policy('p-inf'));
      await next('add p-inf');
      await custom.patchNamespacedCustomObject({ ...at, name: 'p-inf', body: { spec: { suspend: true } } }, merge);
      await next('update p-inf');

      // While the watch is down: history compacted (the informer's revision is now too old), one object
      // created and one deleted. Its watch from the old revision gets 410, and the relist shows both.
      await create(policy('p-inf-gone'));
      await next('add p-inf-gone');
      api.store.compact();
      api.dropWatches();
      await create(policy('p-inf-late'));
      await custom.deleteNamespacedCustomObject({ ...at, name: 'p-inf-gone' });
      await Promise.all([next('add p-inf-late'), next('delete p-inf-gone')]);
      t.truthy(informer.get('p-inf-late', NS));
      t.falsy(informer.get('p-inf-gone', NS));
    } finally {
      await informer.stop();
    }
  },
);

test.serial('a watch that allows bookmarks gets them, with the current resourceVersion', async (t) => {
  // A namespace of its own: the other tests' changes would arrive on a watch of theirs.
  const quiet = { ...at, namespace: 'quiet' };
  const list = (await custom.listNamespacedCustomObject(quiet)) as { metadata: { resourceVersion: string } };
  const got = new Promise<{ type: string; rv: string }>((resolve) => {
    void new Watch(api.kubeConfig(NS)).watch(
      `/apis/${CRD_GROUP}/${CRD_VERSION}/namespaces/quiet/${POLICY_PLURAL}`,
      { resourceVersion: list.metadata.resourceVersion, allowWatchBookmarks: true },
      (type, obj: { metadata: { resourceVersion: string } }) => resolve({ type, rv: obj.metadata.resourceVersion }),
      () => undefined,
    );
  });
  // The watch registers asynchronously; bookmarks are sent to the watches open at the time.
  const timer = setInterval(() => api.bookmark(), 20);
  const e = await got.finally(() => clearInterval(timer));
  t.is(e.type, 'BOOKMARK');
  t.true(Number(e.rv) >= Number(list.metadata.resourceVersion), 'a bookmark carries a revision no older than the list');
});

test('leases: create, renew with the current resourceVersion, a stale renew is 409', async (t) => {
  const leases = api.kubeConfig(NS).makeApiClient(CoordinationV1Api);
  const body = { metadata: { name: 'ferry-controller' }, spec: { holderIdentity: 'a', leaseDurationSeconds: 15 } };
  const made = await leases.createNamespacedLease({ namespace: NS, body });
  const renewed = await leases.replaceNamespacedLease({
    namespace: NS,
    name: 'ferry-controller',
    body: { ...made, spec: { ...made.spec, renewTime: new Date() } },
  });
  t.not(renewed.metadata?.resourceVersion, made.metadata?.resourceVersion);
  const stale = leases.replaceNamespacedLease({
    namespace: NS,
    name: 'ferry-controller',
    body: { ...made, spec: { holderIdentity: 'b' } },
  });
  t.is(await codeOf(stale), 409);
  t.is((await leases.readNamespacedLease({ namespace: NS, name: 'ferry-controller' })).spec?.holderIdentity, 'a');
});

test.serial('a watch from a compacted revision is told 410 Gone inside the stream, as the API server does', async (t) => {
  const made = await create(policy('p-gone'));
  api.store.compact();
  const res = await fetch(
    `${api.url}/apis/${CRD_GROUP}/${CRD_VERSION}/namespaces/${NS}/${POLICY_PLURAL}?watch=true&resourceVersion=${Number(made.metadata.resourceVersion) - 1}`,
    { headers: { authorization: `Bearer ${api.token}` } },
  );
  t.is(res.status, 200);
  const [line] = (await res.text()).split('\n');
  const event = JSON.parse(line ?? '{}') as { type: string; object: { code: number; reason: string } };
  t.is(event.type, 'ERROR');
  t.is(event.object.code, 410);
  t.is(event.object.reason, 'Expired');
});
