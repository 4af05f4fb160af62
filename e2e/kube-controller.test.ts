/**
 * `ferry controller --kube`, two real controller processes against the API stand-in: the one holding the
 * Lease reconciles CheckpointPolicy objects; killed (SIGKILL, no goodbye), the other takes the Lease over
 * and goes on reconciling. Each replica has its own store, as two pods would.
 */
import { CoordinationV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CRD_GROUP, CRD_VERSION, POLICY_PLURAL } from '../controller/src/kube/crd.js';
import { POLICY_FINALIZER, type PolicyObject } from '../controller/src/kube/policy-sync.js';
import { checkpointPolicy, servePolicies } from './support/kube-api/policies.js';
import { type KubeApiStandIn, startKubeApi } from './support/kube-api/server.js';
import { type NodeProcess, startProcess } from './support/netns.js';
import { scaled } from './support/time.js';
import { waitFor } from './support/workload.js';

const FERRY = fileURLToPath(new URL('../bin/ferry.js', import.meta.url));
const NS = 'shop';
const at = { group: CRD_GROUP, version: CRD_VERSION, namespace: NS, plural: POLICY_PLURAL };
let api: KubeApiStandIn;
let scratch: string;
const replicas = new Map<string, NodeProcess>();

test.before(async () => {
  api = await startKubeApi();
  servePolicies(api);
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-kube-controller-'));
  await writeFile(path.join(scratch, 'kubeconfig'), api.kubeConfig().exportConfig());
});

test.after.always(async () => {
  for (const p of replicas.values()) await p.stop();
  await api?.close();
  await rm(scratch, { recursive: true, force: true });
});

async function startReplica(identity: string): Promise<NodeProcess> {
  const argv = [process.execPath, FERRY, '--json', '--controller-token', randomBytes(8).toString('hex'), 'controller'];
  argv.push('--listen', '127.0.0.1:0', '--database', path.join(scratch, `${identity}.db`));
  argv.push('--kube', '--kubeconfig', path.join(scratch, 'kubeconfig'), '--lease-namespace', 'ferry-system', '--identity', identity);
  argv.push('--lease-duration', String(scaled(1_500)), '--renew-deadline', String(scaled(1_000)), '--retry-period', String(scaled(200)));
  const p = await startProcess(argv, { readyLine: /listening on/, timeoutMs: scaled(30_000) });
  replicas.set(identity, p);
  return p;
}

const custom = () => api.kubeConfig(NS).makeApiClient(CustomObjectsApi);
const holder = async () =>
  (await api.kubeConfig().makeApiClient(CoordinationV1Api).readNamespacedLease({ namespace: 'ferry-system', name: 'ferry-controller' }))
    .spec?.holderIdentity;
const observed = (name: string) => async () => ((await custom().getNamespacedCustomObject({ ...at, name })) as PolicyObject).status;

test.serial('two replicas: the Lease holder reconciles; killed, the other takes over and reconciles the next change', async (t) => {
  await startReplica('one');
  await waitFor(holder, (h) => h === 'one', { what: 'replica one to take the lease', timeoutMs: scaled(10_000) });
  await startReplica('two');

  await custom().createNamespacedCustomObject({
    ...at,
    body: checkpointPolicy('orders'),
  });
  const first = await waitFor(observed('orders'), (s) => s?.observedGeneration === 1, { what: 'the leader to reconcile orders' });
  t.is(first?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
  t.is(await holder(), 'one', 'the second replica did not take the lease from a live leader');

  const one = replicas.get('one') as NodeProcess;
  one.child.kill('SIGKILL');
  await one.stop();
  await custom().patchNamespacedCustomObject(
    { ...at, name: 'orders', body: { spec: { schedule: { every: '2h' } } } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
  const second = await waitFor(observed('orders'), (s) => s?.observedGeneration === 2, {
    what: 'replica two to take over and reconcile',
    timeoutMs: scaled(15_000),
  });
  t.is(second?.interval?.ms, 7_200_000);
  t.is(await holder(), 'two');
  t.regex(replicas.get('two')?.output() ?? '', /two leads/);
});

/** The replica that leads now (after the test above: two). */
const leader = async () => replicas.get((await holder()) ?? '') as NodeProcess;

test.serial(
  'a watch cut off while the controller was stopped and its history compacted (410 Gone): it lists again and reconciles what changed',
  async (t) => {
    const lead = await leader();
    const goneBefore = api.goneAnswers;
    await custom().createNamespacedCustomObject({ ...at, body: checkpointPolicy('refunds') });
    await waitFor(observed('refunds'), (s) => s?.observedGeneration === 1, { what: 'refunds reconciled' });
    // Frozen, the controller misses the end of its watch, then the change (sent to no watch: none is
    // open) and the compaction; thawed, it watches again from its old resourceVersion: 410 Gone.
    lead.child.kill('SIGSTOP');
    try {
      api.dropWatches();
      await custom().patchNamespacedCustomObject(
        { ...at, name: 'refunds', body: { spec: { schedule: { every: '3h' } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      api.store.compact();
    } finally {
      lead.child.kill('SIGCONT');
    }
    const status = await waitFor(observed('refunds'), (s) => s?.observedGeneration === 2, {
      what: 'the change made while it was stopped to be reconciled after the relist',
      timeoutMs: scaled(20_000),
    });
    t.is(status?.interval?.ms, 3 * 3_600_000);
    t.true(api.goneAnswers > goneBefore, 'its watch was told 410 Gone, and it listed again');
  },
);

test.serial(
  'watch requests failing (API server errors): the controller keeps trying, with backoff, and reconciles what changed',
  async (t) => {
    await leader();
    api.failWatches(2);
    api.dropWatches();
    await custom().createNamespacedCustomObject({ ...at, body: checkpointPolicy('returns') });
    const status = await waitFor(observed('returns'), (s) => s?.observedGeneration === 1, {
      what: 'a policy created while the watch failed to be reconciled once it works again',
      timeoutMs: scaled(20_000),
    });
    t.is(status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    t.regex((await leader()).output(), /reconcile informer: /, 'the failures were seen and logged');
  },
);

test.serial(
  'a leader killed mid-reconcile, its write never landed (status; later the finalizer removal): the next leader finishes it',
  async (t) => {
    const name = 'invoices';
    const onPolicy = (method: string) => (m: string, url: string) =>
      m === method && new URL(url, 'http://x').pathname.endsWith(`/${POLICY_PLURAL}/${name}${method === 'PUT' ? '/status' : ''}`);
    const statusWrite = api.holdRequests(onPolicy('PUT'));
    await custom().createNamespacedCustomObject({ ...at, body: checkpointPolicy(name) });
    await statusWrite.arrived;
    const midway = (await custom().getNamespacedCustomObject({ ...at, name })) as PolicyObject;
    t.deepEqual(midway.metadata.finalizers, [POLICY_FINALIZER], 'the finalizer landed before the status write');
    t.is(midway.status?.observedGeneration, undefined);
    await killLeader();
    await statusWrite.abandoned;
    statusWrite.release();

    await startReplica('three');
    const status = await waitFor(observed(name), (s) => s?.observedGeneration === 1, {
      what: 'the next leader to reconcile what the killed one left half done',
      timeoutMs: scaled(15_000),
    });
    t.is(status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
    t.is(await holder(), 'three');

    const unfinalize = api.holdRequests(onPolicy('PATCH'));
    await custom().deleteNamespacedCustomObject({ ...at, name });
    await unfinalize.arrived;
    await killLeader();
    await unfinalize.abandoned;
    unfinalize.release();
    t.truthy(((await custom().getNamespacedCustomObject({ ...at, name })) as PolicyObject).metadata.deletionTimestamp);

    await startReplica('four');
    await waitFor(
      () =>
        custom()
          .getNamespacedCustomObject({ ...at, name })
          .then(
            () => 'present',
            () => 'gone',
          ),
      (s) => s === 'gone',
      { what: 'the next leader to finalize the deleted policy', timeoutMs: scaled(15_000) },
    );
    t.is(await holder(), 'four');
  },
);

async function killLeader(): Promise<void> {
  const lead = await leader();
  lead.child.kill('SIGKILL');
  await lead.stop();
}
