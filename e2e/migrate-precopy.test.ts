/**
 * Iterative pre-copy between two nodes, end to end: needs a kernel that tracks dirty memory (soft-dirty
 * bits), which this machine's does not; e2e/lab runs it inside a VM whose kernel does. Where tracking is
 * missing the test is skipped with that reason, and migrate-runc.test.ts covers the stop-and-copy fallback.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { IMAGE } from '../agent/test/runtimes/harness.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { podmanCount, podmanState, startPodmanCounter } from './support/podman-node.js';
import { runcCount, runcRemove, runcState, startRuncCounter } from './support/runc.js';
import { readWorkloadStats, WORKLOAD_STATS_FILE, workloadArgv, workloadRootfs } from './support/workload-bin.js';
import { scaled } from './support/time.js';
import { expectCountResumed, importBusyboxImage, waitFor } from './support/workload.js';

const run = promisify(execFile);
const tracking = await run('criu', ['check', '--feature', 'mem_dirty_track']).then(
  () => true,
  () => false,
);
const serial = tracking ? test.serial : test.serial.skip;

let cluster: TestCluster;
let scratch: string;
const id = `mig-precopy-${process.pid}`;
const RSS_MIB = 64;

if (tracking) {
  test.before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-precopy-'));
    cluster = await startTestCluster(`c${process.pid % 100000}`, ['a', 'b'], {
      runtimes: ['runc', 'podman'],
      subnet: `10.82.${process.pid % 250}.0/24`,
    });
    // podman restores onto the image id recorded in the checkpoint: both nodes get the same image.
    for (const n of ['a', 'b']) await importBusyboxImage('podman', IMAGE, scratch, cluster.node(n).podman.args);
  });
  test.after.always(async () => {
    for (const n of ['a', 'b']) await runcRemove(id, cluster?.node(n).runcRoot);
    await cluster?.destroy();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });
}

/** Two more whole passes over every page after the move: each page came back with what it held. */
async function expectEveryPageIntact(t: ExecutionContext, name: string): Promise<void> {
  const root = cluster.node('b').runcRoot;
  const stats = () => readWorkloadStats(async () => (await run('runc', ['--root', root, 'exec', name, 'cat', WORKLOAD_STATS_FILE])).stdout);
  const atMove = await stats();
  const checked = await waitFor(stats, (s) => s.verifiedPasses >= atMove.verifiedPasses + 2, {
    what: 'two verification passes over the moved memory',
    timeoutMs: scaled(30_000),
  });
  t.is(checked.corruptPages, 0, `${checked.corruptPages} pages differ from their checksums`);
}

/**
 * The workload on a, RSS_MIB MiB of which it keeps rewriting 2 MiB, checking its pages against their
 * checksums as it goes (and growing by growMib, a page per tick); its count once it has counted a while.
 */
async function startSmallWorkingSet(name: string, growMib?: number): Promise<number> {
  const root = cluster.node('a').runcRoot;
  await workloadRootfs(path.join(scratch, name, 'rootfs'));
  const argv = workloadArgv({ rssMib: RSS_MIB, dirtyMibPerS: 2, workingSetMib: 2, verify: true, ...(growMib ? { growMib } : {}) });
  await startRuncCounter(name, scratch, { root, argv });
  return waitFor(
    () => runcCount(name, root),
    (n) => n >= 10,
    { what: `${name} to count`, timeoutMs: scaled(20_000) },
  );
}

serial(
  `pre-copy (needs soft-dirty tracking; run it in e2e/lab): ${RSS_MIB} MiB, small working set, a growing heap: several rounds, shrinking deltas, small final delta, merged on the target`,
  async (t) => {
    const [rootA, rootB] = [cluster.node('a').runcRoot, cluster.node('b').runcRoot];
    const before = await startSmallWorkingSet(id, 2);

    const accepted = await cluster.client().migrate({
      container: { node: 'a', runtime: 'runc', name: id },
      targetNode: 'b',
      strategy: 'precopy',
      maxDowntimeMs: 200,
      maxRounds: 6,
    });
    const m = await cluster.finished(accepted.id);
    t.is(m.status, 'succeeded', JSON.stringify(m.error));
    t.is(m.strategy?.used, 'precopy');
    t.is(m.memoryLoad?.used, 'eager', `auto copies the memory in here: ${m.memoryLoad?.reason}`);
    const merged = m.mergedRounds && 'pages' in m.mergedRounds ? m.mergedRounds : undefined;
    // The heap grew while the rounds ran: the merge took each round's layout, grown pages included.
    t.true((merged?.pages ?? 0) > (m.rounds[0]?.pagesWritten ?? 0), `restored from the rounds merged: ${JSON.stringify(m.mergedRounds)}`);
    t.is(merged?.lazyPages, 0, 'loaded eagerly');
    t.true(m.rounds.length > 1, `${m.rounds.length} rounds (${m.precopyStop})`);
    const [first, ...later] = m.rounds;
    for (const r of later)
      t.true(r.pagesWritten < (first?.pagesWritten ?? 0), `round ${r.round} wrote ${r.pagesWritten} pages, round 1 ${first?.pagesWritten}`);
    t.true((first?.pagesWritten ?? 0) * 4096 >= RSS_MIB * 1024 * 1024 * 0.9, 'round 1 copied the whole memory');
    t.true(
      (m.figures.finalPagesWritten ?? Number.POSITIVE_INFINITY) < (first?.pagesWritten ?? 0) / 4,
      'the frozen delta is a small part of memory',
    );

    await expectCountResumed(() => runcCount(id, rootB), before);
    t.is(await runcState(id, rootA), undefined);
    await expectEveryPageIntact(t, id);
    const inside = await readWorkloadStats(
      async () => (await run('runc', ['--root', rootB, 'exec', id, 'cat', WORKLOAD_STATS_FILE])).stdout,
    );
    t.log(
      `rounds ${m.rounds.map((r) => r.pagesWritten).join(' -> ')} pages, final ${m.figures.finalPagesWritten}; downtime ${inside.maxGapMs} ms inside, ${m.figures.downtimeMs} ms by the controller (estimated ${m.figures.estimatedDowntimeMs}); ${m.precopyStop}`,
    );
  },
);

serial(
  "pre-copy with memoryLoad lazy (needs soft-dirty tracking and lazy pages; run it in e2e/lab): the copy resumes first, the rounds' pages and the final delta, merged on the target, load after, and every page checks out",
  async (t) => {
    const name = `${id}-lazy`;
    const [rootA, rootB] = [cluster.node('a').runcRoot, cluster.node('b').runcRoot];
    const before = await startSmallWorkingSet(name);
    const accepted = await cluster.client().migrate({
      container: { node: 'a', runtime: 'runc', name },
      targetNode: 'b',
      strategy: 'precopy',
      maxDowntimeMs: 200,
      maxRounds: 4,
      memoryLoad: 'lazy',
    });
    const m = await cluster.finished(accepted.id);
    t.log(`downtime ${m.figures.downtimeMs} ms by the controller, memory loaded in ${m.figures.pagesMs} ms after; ${m.memoryLoad?.reason}`);
    t.is(m.status, 'succeeded', JSON.stringify(m.error));
    t.is(m.memoryLoad?.used, 'lazy');
    const merged = m.mergedRounds && 'pages' in m.mergedRounds ? m.mergedRounds : undefined;
    t.true(
      (merged?.lazyPages ?? 0) > (m.rounds[0]?.pagesWritten ?? 0) / 2,
      `most of memory was left to the daemon: ${JSON.stringify(m.mergedRounds)}`,
    );
    t.true((m.figures.pagesMs ?? -1) >= 0, 'the controller waited for the load before cleaning up');
    const events: string[] = [];
    for await (const e of cluster.client().events(accepted.id)) if (e.step === 'pages') events.push(e.message);
    t.true(
      events.some((e) => /all memory in/.test(e)),
      `the load is followed as its own step: ${events.join('; ')}`,
    );
    await expectCountResumed(() => runcCount(name, rootB), before);
    t.is(await runcState(name, rootA), undefined);
    await expectEveryPageIntact(t, name);
    const kept = await cluster.node('b').agent.checkpoints();
    t.false(
      kept.some((c) => c.id === m.checkpointId),
      'the images it loaded from are deleted once it has everything',
    );
    await runcRemove(name, rootB);
  },
);

serial(
  'podman pre-copy (needs soft-dirty tracking; run it in e2e/lab): one pre-checkpoint round, then the final dump on top of it',
  async (t) => {
    const name = `mig-precopy-podman-${process.pid}`;
    const before = await startPodmanCounter(cluster, 'a', name, IMAGE, { timeoutMs: scaled(20_000) });
    const accepted = await cluster
      .client()
      .migrate({ container: { node: 'a', runtime: 'podman', name }, targetNode: 'b', strategy: 'precopy' });
    const m = await cluster.finished(accepted.id);
    t.is(m.status, 'succeeded', JSON.stringify(m.error));
    t.is(m.strategy?.used, 'precopy');
    t.is(m.rounds.length, 1, 'podman keeps one pre-checkpoint');
    // Logged before the checks, so that a failed run shows its figures too.
    t.log(
      `round 1: ${m.rounds[0]?.pagesWritten} pages, final ${m.figures.finalPagesWritten}; downtime ${m.figures.downtimeMs} ms by the controller`,
    );
    t.true(
      (m.figures.finalPagesWritten ?? Number.POSITIVE_INFINITY) < (m.rounds[0]?.pagesWritten ?? 0),
      'the final dump wrote only the delta',
    );
    await expectCountResumed(() => podmanCount(cluster, 'b', name), before);
    t.is(await podmanState(cluster, 'a', name), undefined);
  },
);
