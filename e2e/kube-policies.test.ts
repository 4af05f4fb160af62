/**
 * CheckpointPolicy objects reconciled into the controller's scheduler (controller/src/kube/policy-sync.ts),
 * on the API stand-in through the real client, with a real scheduler on a real SQLite store (no agents:
 * the policies find no containers, which is not what these tests look at). Status, conditions,
 * observedGeneration, the finalizer, a spec only the controller refuses, and a controller restarted while
 * a policy was created.
 */
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, Watch } from '@kubernetes/client-node';
import test from 'ava';
import { CRD_GROUP, CRD_VERSION, POLICY_PLURAL } from '../controller/src/kube/crd.js';
import { PodDirectory } from '../controller/src/kube/pods.js';
import { internalName, POLICY_FINALIZER, type PolicyObject, PolicySync } from '../controller/src/kube/policy-sync.js';
import { NodeRegistry } from '../controller/src/nodes.js';
import { PolicyEvents } from '../controller/src/policy/events.js';
import { PolicyPlacement } from '../controller/src/policy/recovery.js';
import { PolicyScheduler } from '../controller/src/policy/scheduler.js';
import { openDatabase } from '../controller/src/store/db.js';
import { NodeRepo } from '../controller/src/store/nodes.js';
import { PolicyRepo } from '../controller/src/store/policies.js';
import { checkpointPolicy, servePolicies } from './support/kube-api/policies.js';
import { type KubeApiStandIn, startKubeApi } from './support/kube-api/server.js';
import { waitFor } from './support/workload.js';

const NS = 'shop';
const at = { group: CRD_GROUP, version: CRD_VERSION, namespace: NS, plural: POLICY_PLURAL };
let api: KubeApiStandIn;
let custom: CustomObjectsApi;
let scheduler: PolicyScheduler;
let events: PolicyEvents;
let sync: PolicySync;
const errors: string[] = [];

test.before(async () => {
  api = await startKubeApi();
  servePolicies(api);
  custom = api.kubeConfig(NS).makeApiClient(CustomObjectsApi);
  const db = openDatabase(':memory:');
  const repo = new PolicyRepo(db);
  const nodes = new NodeRegistry(new NodeRepo(db));
  events = new PolicyEvents();
  scheduler = new PolicyScheduler(repo, nodes, new PolicyPlacement(repo, nodes, events), events);
  scheduler.start();
  sync = new PolicySync({
    kubeConfig: api.kubeConfig(),
    policies: scheduler,
    events,
    onError: (k, e) => errors.push(`${k}: ${String(e)}`),
  });
  await sync.start();
});

test.after.always(async () => {
  await sync?.stop();
  await scheduler?.stop();
  await api?.close();
});

const policy = checkpointPolicy;

const condition = (o: PolicyObject, type: string) => o.status?.conditions?.find((c) => c.type === type);

/** The events recorded about a policy, as `kubectl describe cpol NAME` lists them. */
const eventsAbout = async (name: string) =>
  (await api.kubeConfig(NS).makeApiClient(CoreV1Api).listNamespacedEvent({ namespace: NS })).items.filter(
    (e) => e.involvedObject.name === name && e.involvedObject.kind === 'CheckpointPolicy',
  );

/** The object once pred holds: checked now, then at every change the API server reports (a watch). */
async function until(name: string, pred: (o: PolicyObject | undefined) => boolean): Promise<PolicyObject | undefined> {
  const read = () =>
    (custom.getNamespacedCustomObject({ ...at, name }) as Promise<PolicyObject>).catch((err: { code?: number }) => {
      if (err.code === 404) return undefined;
      throw err;
    });
  const list = (await custom.listNamespacedCustomObject(at)) as { metadata: { resourceVersion: string } };
  const now = await read();
  if (pred(now)) return now;
  return new Promise((resolve, reject) => {
    let req: { abort(): void } | undefined;
    const timer = setTimeout(() => {
      req?.abort();
      reject(new Error(`${name} never reached the expected state; errors: ${errors.join('; ')}`));
    }, 10_000);
    void new Watch(api.kubeConfig(NS))
      .watch(
        `/apis/${CRD_GROUP}/${CRD_VERSION}/namespaces/${NS}/${POLICY_PLURAL}`,
        { resourceVersion: list.metadata.resourceVersion },
        (type, obj: PolicyObject) => {
          if (obj.metadata?.name !== name) return;
          const o = type === 'DELETED' ? undefined : obj;
          if (pred(o)) {
            clearTimeout(timer);
            req?.abort();
            resolve(o);
          }
        },
        () => undefined,
      )
      .then((r) => {
        req = r;
      });
  });
}

test.serial('a policy applied: finalizer, scheduled in its namespace, status with conditions and observedGeneration', async (t) => {
  await custom.createNamespacedCustomObject({ ...at, body: policy('orders') });
  const o = await until('orders', (x) => condition(x as PolicyObject, 'Ready')?.status === 'True');
  t.true(o?.metadata.finalizers?.includes(POLICY_FINALIZER));
  t.is(o?.status?.observedGeneration, 1);
  t.is(condition(o as PolicyObject, 'Degraded')?.status, 'False');
  t.is(o?.status?.interval?.ms, 3_600_000);
  const scheduled = scheduler.get(internalName(NS, 'orders'));
  t.is(scheduled.spec.selector.namespace, NS, 'the scheduler selects in the policy namespace only');
  const events = await waitFor(
    () => eventsAbout('orders'),
    (es) => es.some((e) => e.reason === 'Applied'),
    { what: 'an Applied event on orders' },
  );
  t.is(events.find((e) => e.reason === 'Applied')?.type, 'Normal');
});

test.serial('reconciling an unchanged policy writes nothing (a write would come back as an update, and loop)', async (t) => {
  await until('orders', (x) => condition(x as PolicyObject, 'Ready')?.status === 'True');
  await sync.settled();
  const before = api.store.revision;
  await sync.reconcile(`${NS}/orders`);
  t.is(api.store.revision, before);
});

test.serial('a spec change is reconciled: generation 2 observed, suspended shows as not Ready', async (t) => {
  await custom.patchNamespacedCustomObject(
    { ...at, name: 'orders', body: { spec: { suspend: true } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  const o = await until('orders', (x) => x?.status?.observedGeneration === 2);
  t.is(condition(o as PolicyObject, 'Ready')?.status, 'False');
  t.is(condition(o as PolicyObject, 'Ready')?.reason, 'Suspended');
  t.is(scheduler.get(internalName(NS, 'orders')).spec.suspend, true);
});

test.serial('a spec only the controller refuses: Degraded names the field, the last accepted spec stays', async (t) => {
  await custom.createNamespacedCustomObject({
    ...at,
    body: policy('adaptive', { schedule: { adaptive: { mtbf: '7d', min: '1m', max: '1h' } } }),
  });
  await until('adaptive', (x) => condition(x as PolicyObject, 'Ready')?.status === 'True');
  await custom.patchNamespacedCustomObject(
    { ...at, name: 'adaptive', body: { spec: { schedule: { adaptive: { mtbf: '7d', min: '2h', max: '1h' } } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  const o = await until('adaptive', (x) => condition(x as PolicyObject, 'Degraded')?.reason === 'InvalidSpec');
  t.regex(condition(o as PolicyObject, 'Ready')?.message ?? '', /spec\.schedule\.adaptive\.max/);
  const events = await waitFor(
    () => eventsAbout('adaptive'),
    (es) => es.some((e) => e.reason === 'InvalidSpec'),
    { what: 'an InvalidSpec event on adaptive' },
  );
  t.is(events.find((e) => e.reason === 'InvalidSpec')?.type, 'Warning');
  t.is(events.filter((e) => e.reason === 'Applied').length, 1, 'one Applied event for generation 1, none again');
  t.is(o?.status?.observedGeneration, 2);
  const kept = scheduler.get(internalName(NS, 'adaptive')).spec.schedule as { adaptive: { min: string } };
  t.is(kept.adaptive.min, '1m');
});

test.serial('deleted: the finalizer holds the object until the scheduler has let the policy go', async (t) => {
  await custom.deleteNamespacedCustomObject({ ...at, name: 'orders' });
  await until('orders', (x) => x === undefined);
  t.false(scheduler.list().some((p) => p.metadata.name === internalName(NS, 'orders')));
});

test.serial('a controller restarted while a policy was created reconciles it on start', async (t) => {
  await sync.stop();
  await custom.createNamespacedCustomObject({ ...at, body: policy('late') });
  t.false(scheduler.list().some((p) => p.metadata.name === internalName(NS, 'late')));
  sync = new PolicySync({ kubeConfig: api.kubeConfig(), policies: scheduler, events });
  await sync.start();
  const o = await until('late', (x) => condition(x as PolicyObject, 'Ready')?.status === 'True');
  t.truthy(o);
  t.true(scheduler.list().some((p) => p.metadata.name === internalName(NS, 'late')));
});

test.serial("pod labels for selectors come from the API server's pods, kept current by a watch", async (t) => {
  const pods = new PodDirectory(api.kubeConfig(), (e) => errors.push(`pods: ${String(e)}`));
  const core = api.kubeConfig(NS).makeApiClient(CoreV1Api);
  const pod = (name: string, labels: Record<string, string>) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels },
    spec: { containers: [{ name: 'db', image: 'ferry-busybox' }] },
  });
  await core.createNamespacedPod({ namespace: NS, body: pod('orders-0', { app: 'orders', tier: 'data' }) });
  await pods.start();
  try {
    t.deepEqual(pods.labelsOf(NS, 'orders-0'), { app: 'orders', tier: 'data' }, 'listed at start');
    t.is(pods.labelsOf('billing', 'orders-0'), undefined, 'by namespace and name');
    await core.createNamespacedPod({ namespace: NS, body: pod('orders-1', { app: 'orders' }) });
    await core.patchNamespacedPod(
      { namespace: NS, name: 'orders-0', body: { metadata: { labels: { tier: 'archive' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await waitFor(
      async () => [pods.labelsOf(NS, 'orders-1'), pods.labelsOf(NS, 'orders-0')?.tier],
      ([added, tier]) => added !== undefined && tier === 'archive',
      { what: 'the new pod and the relabelled one to be seen' },
    );
    await core.deleteNamespacedPod({ namespace: NS, name: 'orders-1' });
    await waitFor(
      async () => pods.labelsOf(NS, 'orders-1'),
      (l) => l === undefined,
      { what: 'the deleted pod to be forgotten' },
    );
    t.is(pods.labelsOf(NS, 'orders-0')?.app, 'orders', 'the merge patch kept the other label');
  } finally {
    await pods.stop();
  }
});
