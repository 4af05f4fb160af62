/**
 * Faults in the middle of a migration, on real nodes (network namespaces, real agents and controller
 * processes, real CRIU and runc). The sender's link is throttled so that the transfer lasts seconds, and
 * each fault is injected once the target starts receiving. Every case must end with
 * exactly one running copy, on the source, and a failed migration whose record names the step.
 */
import test from 'ava';
import { watch } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { MigrationRecord } from '../controller/src/migration/types.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { startCorruptingProxy } from './support/corrupting-proxy.js';
import { runcCount, runcRemove, runcState, startCounting } from './support/runc.js';
import { expectCountResumed, waitFor } from './support/workload.js';

let cluster: TestCluster;
let scratch: string;
const started: string[] = [];
const tag = `f${process.pid % 100000}`;
/** ~2.3 MB of checkpoint at this rate takes about 5 s on the wire. */
const SLOW_LINK_MBIT = 4;

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

/**
 * Starts the migration and calls `fault` once bytes are on their way: when the target's store makes the
 * partial directory of the incoming checkpoint (a file-system event, so the fault lands mid-transfer).
 */
async function migrateWithFault(id: string, fault: (m: MigrationRecord) => Promise<unknown>): Promise<MigrationRecord> {
  const incoming = path.join(cluster.node('b').stateDir, 'images', 'checkpoints');
  const watcher = watch(incoming);
  const receiving = new Promise<void>((resolve) =>
    watcher.on('change', (_type, name) => {
      if (String(name).startsWith('.partial-import-')) resolve();
    }),
  );
  try {
    const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
    await receiving;
    await fault(accepted);
    return accepted;
  } finally {
    watcher.close();
  }
}

const finished = (id: string) => cluster.finished(id);

/** The source counts on from before the migration; the target runs nothing and keeps no checkpoint. */
async function assertOneCopyOnSource(t: import('ava').ExecutionContext, id: string, before: number): Promise<void> {
  await expectCountResumed(() => runcCount(id, cluster.node('a').runcRoot), before);
  t.is(await runcState(id, cluster.node('b').runcRoot), undefined, 'nothing runs on the target');
  const b = cluster.node('b');
  await waitFor(
    async () => ({ listed: await b.agent.checkpoints(), partial: await readdir(path.join(b.stateDir, 'images', 'checkpoints')) }),
    (s) => s.listed.length === 0 && s.partial.length === 0,
    { what: 'the target to keep nothing of the checkpoint', timeoutMs: 15_000 },
  );
}

/** Runs `fn` with the sender's link throttled, so that a transfer lasts long enough to be hit mid-way. */
async function onSlowLink<T>(fn: () => Promise<T>): Promise<T> {
  await cluster.net.throttle('a', SLOW_LINK_MBIT);
  try {
    return await fn();
  } finally {
    await cluster.net.throttle('a', undefined);
  }
}

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
