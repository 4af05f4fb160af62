/**
 * Faults in the middle of a migration, on real nodes (network namespaces, real agents and controller
 * processes, real CRIU and runc). The sender's link is throttled so that the transfer lasts seconds, and
 * each fault is injected once the target starts receiving. Every case must end with
 * exactly one running copy, on the source, and a failed migration whose record names the step.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freezerFromProcCgroup } from '../agent/src/runtimes/freezer.js';
import type { MigrationRecord } from '../controller/src/migration/types.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { startCorruptingProxy } from './support/corrupting-proxy.js';
import { assertOneCopy, migrateWithFault as migrateWithFault_, onSlowLink as onSlowLink_ } from './support/faults.js';
import { runcRemove, startCounting } from './support/runc.js';
import { waitFor } from './support/workload.js';

const run = promisify(execFile);

let cluster: TestCluster;
let scratch: string;
const started: string[] = [];
const tag = `f${process.pid % 100000}`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-faults-'));
  cluster = await startTestCluster(tag, ['a', 'b'], { runtimes: ['runc'], subnet: `10.80.${process.pid % 250}.0/24` });
});

test.after.always(async () => {
  for (const id of started) for (const n of ['a', 'b']) await runcRemove(id, cluster?.node(n).runcRoot);
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function counterOnA(what: string): Promise<{ id: string; before: number }> {
  const id = `fault-${what}-${process.pid}`;
  started.push(id);
  return { id, before: await startCounting(id, scratch, cluster.node('a').runcRoot) };
}

const finished = (id: string) => cluster.finished(id);
const migrateWithFault = (id: string, fault: (m: MigrationRecord) => Promise<unknown>) => migrateWithFault_(cluster, id, fault);
const onSlowLink = <T>(fn: () => Promise<T>) => onSlowLink_(cluster, fn);
/** The source counts on from before the migration; the target runs nothing and keeps no checkpoint. */
const assertOneCopyOnSource = async (t: import('ava').ExecutionContext, id: string, before: number) => {
  await assertOneCopy(cluster, id, 'a', before);
  t.deepEqual(await cluster.node('b').agent.checkpoints(), [], 'the target keeps no checkpoint');
};

test.serial('target agent killed mid-transfer: the source runs again; the restarted target keeps nothing', async (t) => {
  const { id, before } = await counterOnA('kill-target');
  try {
    await onSlowLink(async () => {
      const accepted = await migrateWithFault(id, () => cluster.killAgent('b'));
      const m = await finished(accepted.id);
      t.is(m.status, 'failed');
      t.is(m.error?.step, 'transfer', JSON.stringify(m.error));
      t.regex(m.rollback?.outcome ?? '', /restored on a from its own checkpoint/);
    });
  } finally {
    await cluster.startAgent('b');
  }
  await assertOneCopyOnSource(t, id, before);
});

test.serial('link to the target cut mid-transfer: the stalled send fails, the source runs again', async (t) => {
  const { id, before } = await counterOnA('cut');
  try {
    await onSlowLink(async () => {
      const accepted = await migrateWithFault(id, () => cluster.net.cut('b'));
      const m = await finished(accepted.id);
      t.is(m.status, 'failed');
      t.is(m.error?.step, 'transfer');
      t.is(m.error?.code, 'transfer_failed', m.error?.message);
      t.regex(m.error?.message ?? '', /stalled/);
      t.regex(m.rollback?.outcome ?? '', /restored on a/);
    });
  } finally {
    await cluster.net.heal('b');
  }
  await assertOneCopyOnSource(t, id, before);
});

test.serial('a byte damaged in transit: the target refuses the checkpoint, the source runs again', async (t) => {
  const { id, before } = await counterOnA('corrupt');
  const b = cluster.node('b');
  const target = new URL(b.url);
  const proxy = await startCorruptingProxy(cluster.net.hostAddress, { host: target.hostname, port: Number(target.port) }, 1_000_000);
  await cluster.client().registerNode('b', `http://${proxy.address}`, b.token);
  try {
    const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
    const m = await finished(accepted.id);
    await proxy.flipped;
    t.is(m.status, 'failed');
    t.is(m.error?.step, 'transfer');
    t.is(m.error?.code, 'transfer_failed');
    t.regex(m.error?.message ?? '', /arrived damaged/);
  } finally {
    await cluster.client().registerNode('b', b.url, b.token);
    await proxy.close();
  }
  await assertOneCopyOnSource(t, id, before);
});

test.serial('controller killed mid-transfer and started again: it settles the migration from its journal', async (t) => {
  const { id, before } = await counterOnA('kill-controller');
  const accepted = await onSlowLink(async () => {
    const started = await migrateWithFault(id, () => cluster.killController());
    await cluster.startController();
    return started;
  });
  const m = await finished(accepted.id);
  t.is(m.status, 'failed');
  t.is(m.error?.code, 'interrupted');
  t.is(m.error?.step, 'transfer');
  t.regex(m.rollback?.outcome ?? '', /restored on a/);
  await assertOneCopyOnSource(t, id, before);
});

test.serial('cancel during the transfer: it takes effect at the next step and rolls back', async (t) => {
  const { id, before } = await counterOnA('cancel');
  const accepted = await onSlowLink(() => migrateWithFault(id, (m) => cluster.client().cancel(m.id)));
  const m = await finished(accepted.id);
  t.is(m.status, 'cancelled');
  t.is(m.error?.code, 'cancelled');
  t.regex(m.rollback?.outcome ?? '', /restored on a/);
  const again = await t.throwsAsync(cluster.client().cancel(accepted.id));
  t.regex(again?.message ?? '', /already cancelled/);
  await assertOneCopyOnSource(t, id, before);
});

test.serial('agent killed while a leave-running dump holds the container frozen: started again, it thaws it', async (t) => {
  const { id, before } = await counterOnA('kill-mid-dump');
  const pid = Number(JSON.parse((await run('runc', ['--root', cluster.node('a').runcRoot, 'state', id])).stdout).pid);
  const freezer = freezerFromProcCgroup(await readFile(`/proc/${pid}/cgroup`, 'utf8'));
  if (!freezer) return t.pass('this host has no cgroup freezer: a dump does not freeze ahead of CRIU');
  const call = cluster
    .node('a')
    .agent.checkpoint({ runtime: 'runc', container: id, leaveRunning: true })
    .catch(() => undefined);
  // cgroup v1's freezer.state raises no event when it changes, so it is polled, as the agent does.
  await waitFor(() => freezer.isFrozen(), Boolean, { what: 'the dump to freeze the container', everyMs: 1, timeoutMs: 30_000 });
  await cluster.killAgent('a');
  await call;
  await cluster.startAgent('a');
  await assertOneCopy(cluster, id, 'a', before);
  t.pass();
});
