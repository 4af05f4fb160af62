/**
 * A pod migrated between two nodes in Kubernetes mode, with every part real but kubelet and the API
 * server: `ferry controller --kube` (holding the Lease) against the API stand-in, real agents in two
 * network namespaces, a real containerd with its CRI plugin per node, real CRIU. kubelet is played by
 * e2e/support/kubelet.ts, which runs the stand-in's pods on their node's containerd through the CRI API as
 * kubelet would (pod annotations on the sandbox config, the RuntimeClass's handler). POST /migrate with a
 * pod: the pod's container is held frozen and dumped on a, sent to b, a replacement pod pinned to b
 * restores it through ferry-runc and keeps counting, and the source pod is deleted; a replacement that
 * cannot start is deleted and the source, never stopped, counts on.
 */
import { CoreV1Api, CustomObjectsApi, type V1Pod } from '@kubernetes/client-node';
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { IMAGE } from '../agent/test/runtimes/harness.js';
import type { ControllerClient } from '../controller/src/client.js';
import type { MigrationRecord } from '../controller/src/migration/types.js';
import { CHECKPOINT_PLURAL, checkpointCrd, MIGRATION_PLURAL, migrationCrd } from '../controller/src/kube/record-crds.js';
import { CRD_GROUP, CRD_VERSION } from '../controller/src/kube/crd.js';
import { CRI } from '../controller/src/policy/compile.js';
import type { TestCluster } from './support/cluster.js';
import { CRI_HANDLER, CRI_NAMESPACE, type ContainerdNode, importFromPodman } from './support/containerd.js';
import type { CriClient } from './support/cri/client.js';
import { type CriCluster, CTR_IMAGE, startCriCluster } from './support/cri-cluster.js';
import { checkpointPolicy, servePolicies } from './support/kube-api/policies.js';
import { startKubeApi, type KubeApiStandIn } from './support/kube-api/server.js';
import { type FakeKubelet, startFakeKubelet } from './support/kubelet.js';
import { scaled } from './support/time.js';
import { COUNTER_ARGV, countOf, waitFor } from './support/workload.js';

/** The same image under a name only node a has: a replacement pod on b cannot start from it. */
const ONLY_ON_A = 'localhost/ferry-busybox-only-a:1';
const SUBNETS: Record<string, string> = { a: '10.97.1.0/24', b: '10.97.2.0/24' };
const NS = 'shop';

let scratch: string;
let api: KubeApiStandIn;
let nodes: CriCluster;
let cluster: TestCluster;
const kubelets: FakeKubelet[] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-kube-pods-'));
  api = await startKubeApi();
  servePolicies(api);
  for (const crd of [migrationCrd(), checkpointCrd()]) api.registerCrd(crd as unknown as Parameters<KubeApiStandIn['registerCrd']>[0]);
  await writeFile(path.join(scratch, 'kubeconfig'), api.kubeConfig().exportConfig());
  nodes = await startCriCluster(`kpm${process.pid % 100000}`, scratch, {
    subnet: `10.96.${process.pid % 250}.0/24`,
    podSubnets: SUBNETS,
    controllerArgs: [
      ...['--kube', '--kubeconfig', path.join(scratch, 'kubeconfig'), '--lease-namespace', 'ferry-system', '--database', database()],
      ...['--lease-duration', String(scaled(5_000)), '--renew-deadline', String(scaled(3_000)), '--retry-period', String(scaled(300))],
    ],
  });
  cluster = nodes.cluster;
  await execa('podman', ['tag', IMAGE, ONLY_ON_A]);
  await importFromPodman([nodes.containerd.get('a') as ContainerdNode], ONLY_ON_A, scratch, CRI_NAMESPACE);
  for (const n of ['a', 'b']) {
    kubelets.push(
      await startFakeKubelet({
        node: n,
        cri: nodes.cri.get(n) as CriClient,
        kubeConfig: api.kubeConfig(),
        handlers: { ferry: CRI_HANDLER },
      }),
    );
  }
  await waitFor(
    async () => cluster.controllerProcess().output(),
    (out) => / leads \(lease /.test(out),
    { what: 'the controller to take the Lease', timeoutMs: scaled(30_000) },
  );
});

test.after.always(async () => {
  for (const k of kubelets) await k.stop().catch(() => undefined);
  await nodes?.stop();
  await api?.close();
  await execa('podman', ['rmi', ONLY_ON_A]).catch(() => undefined);
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const core = () => api.kubeConfig(NS).makeApiClient(CoreV1Api);
/** The controller's store, named here so that a test can start a replica on an empty one. */
const database = () => path.join(scratch, 'controller.db');

function counterPod(name: string, node: string, image = CTR_IMAGE): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels: { app: name }, annotations: { 'example.com/owner': 'shop-team' } },
    spec: { nodeName: node, runtimeClassName: 'ferry', containers: [{ name: 'count', image, command: COUNTER_ARGV }] },
  };
}

/** The count of a pod's container on a node, through its process (found by containerd's CRI labels). */
async function podCount(node: string, pod: string): Promise<number> {
  const c = (await cluster.node(node).agent.containers('runc')).find(
    (x) => x.labels?.[CRI.pod] === pod && x.labels?.[CRI.type] === 'container' && x.state === 'running',
  );
  return c?.pid ? countOf(c.pid) : Number.NaN;
}

async function runningPod(name: string, node: string, image?: string): Promise<number> {
  await core().createNamespacedPod({ namespace: NS, body: counterPod(name, node, image) });
  return waitFor(
    () => podCount(node, name),
    (n) => n >= 20,
    { what: `pod ${name} to count on ${node}`, timeoutMs: scaled(30_000) },
  );
}

const podOrUndefined = (name: string) =>
  core()
    .readNamespacedPod({ namespace: NS, name })
    .catch((err: { code?: number }) => (err.code === 404 ? undefined : Promise.reject(err)));

interface CheckpointObject {
  metadata: { name: string; ownerReferences?: { kind: string; name: string; uid: string }[] };
  spec?: { policy: string; node: string; container: string; parent?: string };
}

interface MigrationObject {
  spec?: { pod: { name: string }; sourceNode: string; targetNode: string };
  status?: { phase?: string; step?: string; replacement?: string; downtimeMs?: number; message?: string };
}

const migrationObject = (name: string) =>
  api
    .kubeConfig(NS)
    .makeApiClient(CustomObjectsApi)
    .getNamespacedCustomObject({ group: CRD_GROUP, version: CRD_VERSION, namespace: NS, plural: MIGRATION_PLURAL, name })
    .then(
      (o) => o as MigrationObject,
      (err: { code?: number }) => (err.code === 404 ? undefined : Promise.reject(err)),
    );

async function migrated(body: Parameters<ControllerClient['migratePod']>[0]): Promise<MigrationRecord> {
  const accepted = await cluster.client().migratePod(body);
  return cluster.finished(accepted.id);
}

test.serial('a pod moves from a to b: its replacement restores the count on b, the source pod is gone', async (t) => {
  const before = await runningPod('counter', 'a');
  const m = await migrated({ pod: { namespace: NS, name: 'counter' }, targetNode: 'b' });
  t.is(m.status, 'succeeded', JSON.stringify({ error: m.error, rollback: m.rollback }));
  t.is(m.source.node, 'a');
  const replacement = m.pod?.replacement as string;
  t.regex(replacement, /^counter-[0-9a-f]{6}$/);

  const first = await podCount('b', replacement);
  t.true(first >= before, `the count resumes from the checkpoint on b (${first} after ${before} on a), not from 0`);
  await waitFor(
    () => podCount('b', replacement),
    (n) => n > first,
    { what: 'the replacement to keep counting on b' },
  );
  t.is(await podOrUndefined('counter'), undefined, 'the source pod is deleted');
  t.true(Number.isNaN(await podCount('a', 'counter')), 'nothing of it runs on a any more');

  const pod = await podOrUndefined(replacement);
  t.is(pod?.spec?.nodeName, 'b');
  t.is(pod?.spec?.runtimeClassName, 'ferry');
  t.deepEqual(pod?.metadata?.labels, { app: 'counter' }, 'Services find it by the same labels');
  t.is(pod?.metadata?.annotations?.['example.com/owner'], 'shop-team');
  t.is(pod?.metadata?.annotations?.['ferry.dev/migration'], m.id);
  t.false(
    Object.keys(pod?.metadata?.annotations ?? {}).some((k) => k.startsWith('ferry.dev/restore-from')),
    'the restore annotation is taken off: a restart later starts afresh',
  );
  for (const n of ['a', 'b']) {
    const left = (await cluster.node(n).agent.checkpoints()).filter((c) => c.id.startsWith(m.checkpointId));
    t.deepEqual(left, [], `no checkpoint of the migration left on ${n}`);
  }
  t.true((m.figures.downtimeMs ?? 0) > 0);
  // kubectl get migrations -n shop: the record, as the controller wrote it.
  const record = await waitFor(
    () => migrationObject(m.id),
    (o) => o?.status?.phase === 'succeeded',
    { what: 'the Migration object to say succeeded' },
  );
  t.deepEqual(record?.spec, { pod: { name: 'counter' }, sourceNode: 'a', targetNode: 'b' });
  t.is(record?.status?.replacement, replacement);
  t.is(record?.status?.downtimeMs, Math.round(m.figures.downtimeMs ?? 0));
  t.log(`downtime ${m.figures.downtimeMs} ms (dump ${m.figures.dumpMs}, transfer ${m.figures.transferMs}, restore ${m.figures.restoreMs})`);
});

test.serial('a replacement that cannot start rolls back: it is deleted, and the source, never stopped, counts on', async (t) => {
  const before = await runningPod('stuck', 'a', ONLY_ON_A);
  const m = await migrated({ pod: { namespace: NS, name: 'stuck' }, targetNode: 'b', readyTimeoutMs: scaled(4_000) });
  t.is(m.status, 'failed');
  t.is(m.error?.step, 'restore', JSON.stringify(m.error));
  t.is(m.error?.code, 'timeout', JSON.stringify(m.error));
  t.regex(m.rollback?.outcome ?? '', /thawed on a; it never stopped/);
  t.is(await podOrUndefined(m.pod?.replacement as string), undefined, 'the replacement pod is deleted');
  await waitFor(
    () => podCount('a', 'stuck'),
    (n) => n > before + 5,
    { what: 'the source to count on after the rollback' },
  );
  t.truthy(await podOrUndefined('stuck'));
});

test.serial('a leader killed mid-migration: another replica, with an empty store, finds the Migration object and settles it', async (t) => {
  const before = await runningPod('orphan', 'a');
  // The replacement pod's creation is held unanswered, and dropped once the leader is dead: it never lands.
  const creation = api.holdRequests(
    (method, url) => method === 'POST' && new URL(url, 'http://x').pathname === `/api/v1/namespaces/${NS}/pods`,
  );
  const accepted = await cluster.client().migratePod({ pod: { namespace: NS, name: 'orphan' }, targetNode: 'b' });
  await creation.arrived;
  await cluster.killController();
  await creation.abandoned;
  creation.release();
  const frozen = (await cluster.node('a').agent.containers('runc')).find(
    (x) => x.labels?.[CRI.pod] === 'orphan' && x.labels?.[CRI.type] === 'container',
  );
  t.is(frozen?.state, 'paused', 'the source is held frozen meanwhile');

  // Another replica: its own, empty store; the nodes register with it as agents do.
  for (const f of ['', '-wal', '-shm']) await rm(`${database()}${f}`, { force: true });
  const replica = await cluster.startController();
  for (const n of ['a', 'b']) await replica.registerNode(n, cluster.node(n).url, cluster.node(n).token);
  const m = await waitFor(
    () => replica.migration(accepted.id).catch(() => undefined),
    (r) => r !== undefined && r.status !== 'running',
    { what: 'the new leader to take the migration over and settle it', timeoutMs: scaled(30_000) },
  );
  t.is(m?.status, 'failed', JSON.stringify(m?.error));
  t.regex(m?.rollback?.outcome ?? '', /thawed on a; it never stopped/);
  t.regex(cluster.controllerProcess().output(), new RegExp(`pod migration ${accepted.id} taken over from an earlier leader`));
  await waitFor(
    () => podCount('a', 'orphan'),
    (n) => n > before + 5,
    { what: 'the source to count on, thawed by the new leader' },
  );
  const record = await waitFor(
    () => migrationObject(accepted.id),
    (o) => o?.status?.phase === 'failed',
    { what: 'the Migration object to say failed' },
  );
  t.regex(record?.status?.message ?? '', /thawed on a/);
});

test.serial("a CheckpointPolicy's checkpoints are Checkpoint objects it owns, gone when retention deletes them", async (t) => {
  await runningPod('keeper', 'a');
  const custom = api.kubeConfig(NS).makeApiClient(CustomObjectsApi);
  const policy = (await custom.createNamespacedCustomObject({
    group: CRD_GROUP,
    version: CRD_VERSION,
    namespace: NS,
    plural: 'checkpointpolicies',
    body: checkpointPolicy('keeper', { selector: { names: ['keeper'] }, retention: { keepLast: 1 } }),
  })) as { metadata: { uid: string } };
  await waitFor(
    () =>
      cluster
        .client()
        .policy('shop.keeper')
        .catch(() => undefined),
    (p) => p !== undefined,
    { what: 'the policy to reach the scheduler' },
  );
  const checkpoints = () =>
    custom
      .listNamespacedCustomObject({ group: CRD_GROUP, version: CRD_VERSION, namespace: NS, plural: CHECKPOINT_PLURAL })
      .then((l) => (l as { items: CheckpointObject[] }).items);

  const first = await cluster.client().runPolicy('shop.keeper');
  t.is(first.status, 'succeeded', JSON.stringify(first));
  const [one] = await waitFor(checkpoints, (l) => l.length === 1, { what: 'a Checkpoint object for the first run' });
  t.is(one?.spec?.policy, 'keeper');
  t.is(one?.spec?.node, 'a');
  t.deepEqual(
    one?.metadata.ownerReferences?.map((o) => [o.kind, o.name, o.uid]),
    [['CheckpointPolicy', 'keeper', policy.metadata.uid]],
  );

  await cluster.client().runPolicy('shop.keeper');
  const after = await waitFor(checkpoints, (l) => l.length === 1 && l[0]?.metadata.name !== one?.metadata.name, {
    what: "retention to delete the first run's Checkpoint object",
  });
  t.regex(after[0]?.metadata.name ?? '', /^shop-keeper-/, 'named by the checkpoint, as the agents store it');
  await custom.deleteNamespacedCustomObject({
    group: CRD_GROUP,
    version: CRD_VERSION,
    namespace: NS,
    plural: 'checkpointpolicies',
    name: 'keeper',
  });
});

test.serial('refused: a pod managed by a controller, a pod already on the target, and container and pod together', async (t) => {
  await core().createNamespacedPod({
    namespace: NS,
    body: {
      ...counterPod('owned', 'a'),
      metadata: {
        name: 'owned',
        namespace: NS,
        ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: 'web-7f9c', uid: 'u-1', controller: true }],
      },
    },
  });
  await waitFor(
    async () => (await podOrUndefined('owned'))?.status?.phase,
    (p) => p === 'Running',
    { what: 'the owned pod to run' },
  );
  const owned = await t.throwsAsync(cluster.client().migratePod({ pod: { namespace: NS, name: 'owned' }, targetNode: 'b' }));
  t.regex(owned?.message ?? '', /managed by ReplicaSet web-7f9c/);
  const same = await t.throwsAsync(cluster.client().migratePod({ pod: { namespace: NS, name: 'owned' }, targetNode: 'a' }));
  t.regex(same?.message ?? '', /managed by|already runs on a/);
  const both = await t.throwsAsync(
    cluster
      .client()
      .migrate({ pod: { namespace: NS, name: 'x' }, container: { node: 'a', runtime: 'runc', name: 'x' }, targetNode: 'b' } as never),
  );
  t.regex(both?.message ?? '', /container or pod, not both/);
  const missing = await t.throwsAsync(cluster.client().migratePod({ pod: { namespace: NS, name: 'nope' }, targetNode: 'b' }));
  t.regex(missing?.message ?? '', /no pod shop\/nope/);
});
