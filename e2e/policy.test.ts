/**
 * Checkpoint policies against real agents, CRIU and runc on two network-namespace nodes: a policy that
 * checkpoints a counting container every 2 s and keeps 3 ends up with exactly 3 checkpoints, on the node
 * and in the controller's record, each of which restores to the count the container had when it was taken;
 * a bad policy file is refused with the field named; a restarted controller neither repeats nor loses runs;
 * a node lost (agent killed, link cut) has its container restored on the node holding a copy, and when it
 * comes back its own copy is stopped, so that exactly one runs; a coordinated policy over two containers
 * that exchange counts restores to a consistent pair, where checkpoints taken apart do not.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { PolicyEvent } from '../controller/src/policy/events.js';
import type { PolicyDocument, PolicyRun } from '../controller/src/policy/types.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { sample } from './support/metrics.js';
import { runcCount, runcRemove, runcState, startCounting, startRuncCounter } from './support/runc.js';
import { scaled } from './support/time.js';
import { waitFor } from './support/workload.js';

const run = promisify(execFile);
const FERRY = fileURLToPath(new URL('../bin/ferry.js', import.meta.url));
const INTERVAL_MS = 2_000;
let cluster: TestCluster;
let scratch: string;
const containers: { id: string; root: string }[] = [];
const tag = `p${process.pid % 100000}`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-policy-'));
  cluster = await startTestCluster(tag, ['a', 'b'], {
    runtimes: ['runc'],
    subnet: `10.85.${process.pid % 250}.0/24`,
    // A lost node is noticed within a health check: quick ones keep the recovery test short.
    controllerArgs: ['--health-check', String(scaled(1_000))],
  });
});

test.after.always(async () => {
  for (const { id, root } of containers) await runcRemove(id, root);
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const policyOf = (name: string, container: string, spec: Partial<PolicyDocument['spec']> = {}): PolicyDocument => ({
  apiVersion: 'ferry.dev/v1alpha1',
  kind: 'CheckpointPolicy',
  metadata: { name },
  spec: { selector: { names: [container], runtime: 'runc' }, schedule: { every: `${INTERVAL_MS / 1000}s` }, ...spec },
});

const finishedRuns = async (name: string): Promise<PolicyRun[]> =>
  (await cluster.client().policyRuns(name)).filter((r) => r.status !== 'running');

test.serial('every 2s, keepLast 3: exactly three checkpoints remain, each restoring to the count of its time', async (t) => {
  const id = `pol-count-${process.pid}`;
  const root = cluster.node('a').runcRoot;
  containers.push({ id, root });
  const startCount = await startCounting(id, scratch, root);
  const startedAt = Date.now();
  await cluster.client().applyPolicy(policyOf('count', id, { retention: { keepLast: 3 } }));
  const events: PolicyEvent[] = [];
  const following = (async () => {
    for await (const e of cluster.client().policyEvents('count')) {
      events.push(e);
      if (events.some((x) => x.type === 'deleted') && events.filter((x) => x.type === 'run-finished').length >= 2) break;
    }
  })();

  const runs = await waitFor(
    () => finishedRuns('count'),
    (rs) => rs.filter((r) => r.status === 'succeeded').length >= 5,
    { timeoutMs: scaled(60_000), everyMs: 200, what: 'five successful policy runs' },
  );
  t.true(
    runs.every((r) => r.status === 'succeeded'),
    JSON.stringify(runs.filter((r) => r.status !== 'succeeded')),
  );
  t.true(
    runs.every((r) => r.checkpoints.length === 1),
    'one container selected, one checkpoint per run',
  );
  // The rate of the live counter, to place each checkpoint's count in time.
  const endCount = await runcCount(id, root);
  const rate = (endCount - startCount) / (Date.now() - startedAt);

  await following;
  t.true(events.some((e) => e.type === 'run-started' && e.policy === 'count'));
  t.true(
    events.some((e) => e.type === 'checkpoint' && e.message.includes(id)),
    'each checkpoint is an event naming the container',
  );
  t.true(
    events.some((e) => e.type === 'deleted'),
    'retention deletions are events',
  );
  const p = await cluster.client().policy('count');
  t.is(p.status.phase, 'Active');
  t.is(p.status.containers, 1);
  t.true((p.status.cost?.frozenMs ?? 0) > 0, 'the cost comes from CRIU figures');
  const kept = await cluster.client().policyCheckpoints('count');
  t.is(kept.length, 3, JSON.stringify(kept.map((c) => c.id)));
  t.true(kept.every((c) => c.state === 'complete' && c.node === 'a'));
  // Retention deleted the rest on the node itself, not only in the controller's record.
  const onNode = (await cluster.node('a').agent.checkpoints()).filter((m) => m.id.startsWith('count-')).map((m) => m.id);
  t.deepEqual(onNode.sort(), kept.map((c) => c.id).sort());
  const runsSoFar = await finishedRuns('count');
  t.true(runsSoFar.reduce((n, r) => n + r.deleted.length, 0) >= 2, 'retention deleted the older ones');
  // The controller's metrics saw at least those runs (scraped after they were listed, so no fewer).
  const metrics = await cluster.client().metrics();
  const succeeded = runsSoFar.filter((r) => r.status === 'succeeded').length;
  t.true((sample(metrics, 'ferry_controller_policy_runs_total', { status: 'succeeded' }) ?? 0) >= succeeded);
  t.true((sample(metrics, 'ferry_controller_policy_checkpoints_total', { result: 'complete' }) ?? 0) >= succeeded);
  t.true((sample(metrics, 'ferry_controller_scheduler_lag_seconds_count') ?? 0) >= 1, 'scheduled runs report their lag');

  let previous = 0;
  for (const c of kept) {
    const copy = `${c.id}-r`;
    containers.push({ id: copy, root });
    await cluster.node('a').agent.restore(c.id, { name: copy });
    const restored = await runcCount(copy, root);
    const expected = startCount + rate * (Date.parse(c.createdAt) - startedAt);
    t.true(
      Math.abs(restored - expected) <= rate * INTERVAL_MS,
      `${c.id} taken at ${c.createdAt} restored to ${restored}; the live counter was at about ${Math.round(expected)} then (${(rate * 1000).toFixed(1)}/s)`,
    );
    t.true(restored > previous, 'later checkpoints hold later counts');
    previous = restored;
    await runcRemove(copy, root);
  }
  const removed = await cluster.client().deletePolicy('count');
  t.deepEqual(removed.left, []);
  t.is(removed.deleted.length, 3);
  t.deepEqual(
    (await cluster.node('a').agent.checkpoints()).filter((m) => m.id.startsWith('count-')),
    [],
  );
});

test.serial('a bad policy file is refused naming the field; a missing policy is 404', async (t) => {
  const file = path.join(scratch, 'bad.yaml');
  await writeFile(file, 'kind: CheckpointPolicy\nmetadata: {name: bad}\nspec:\n  selector: {names: [x]}\n  schedule: {every: 200ms}\n');
  const env = { ...process.env, FERRY_CONTROLLER_TOKEN: cluster.controllerToken };
  const controllerUrl = cluster.client().url;
  const err = await run(process.execPath, [FERRY, '--controller', controllerUrl, 'policy', 'apply', '-f', file], { env }).then(
    () => undefined,
    (e: { stderr: string }) => e,
  );
  t.truthy(err, 'apply of a 200 ms interval must fail');
  t.regex(err?.stderr ?? '', /spec\.schedule\.every/);
  await writeFile(file, 'metadata: {name: bad}\nspec:\n  selector: {names: [x]\n');
  const syntax = await run(process.execPath, [FERRY, '--controller', controllerUrl, 'policy', 'apply', '-f', file], { env }).then(
    () => undefined,
    (e: { stderr: string }) => e,
  );
  t.regex(syntax?.stderr ?? '', /bad\.yaml:\d+/, 'a YAML error names the file and line');
  const missing = await cluster
    .client()
    .policy('nope')
    .catch((e: { code?: string }) => e);
  t.is((missing as { code?: string }).code, 'not_found');
});

test.serial('a controller restarted between runs neither repeats a run nor loses the next one', async (t) => {
  const id = `pol-restart-${process.pid}`;
  const root = cluster.node('b').runcRoot;
  containers.push({ id, root });
  await startCounting(id, scratch, root);
  await cluster.client().applyPolicy(policyOf('restart', id, { retention: { keepLast: 10 } }));
  await waitFor(
    () => finishedRuns('restart'),
    (rs) => rs.length >= 2,
    { timeoutMs: scaled(30_000), everyMs: 100, what: 'two runs' },
  );
  await cluster.killController();
  await cluster.startController();
  const runs = await waitFor(
    () => finishedRuns('restart'),
    (rs) => rs.length >= 4,
    { timeoutMs: scaled(30_000), everyMs: 100, what: 'runs after the restart' },
  );
  const starts = runs.map((r) => Date.parse(r.startedAt)).sort((a, b) => a - b);
  const gaps = starts.slice(1).map((s, i) => s - (starts[i] as number));
  // Jitter only ever delays (up to 10%); a repeated run would start well inside one interval of the previous.
  t.true(
    gaps.every((g) => g >= INTERVAL_MS * 0.9 || runs.some((r) => r.trigger === 'recovery')),
    `gaps ${gaps.join(', ')} ms`,
  );
  const kept = await cluster.client().policyCheckpoints('restart');
  t.true(
    kept.every((c) => c.state === 'complete'),
    'a checkpoint asked for before the kill is settled on restart',
  );
  t.is(new Set(kept.map((c) => c.id)).size, kept.length);
  await cluster.client().deletePolicy('restart');
});

test.serial('a lost node: its container is restored from the latest copy on b, and fenced on a when a returns', async (t) => {
  const id = `pol-lost-${process.pid}`;
  const rootA = cluster.node('a').runcRoot;
  const rootB = cluster.node('b').runcRoot;
  containers.push({ id, root: rootA }, { id, root: rootB });
  // The policy goes on checkpointing the copy on b, which freezes it for a moment each time: a read of
  // its state can fall in one (seen once in CI as 'paused').
  const runningOnB = () =>
    waitFor(
      () => runcState(id, rootB),
      (s) => s === 'running',
      { what: `${id} running on b` },
    );
  await startCounting(id, scratch, rootA);
  await cluster
    .client()
    .applyPolicy(policyOf('lost', id, { retention: { keepLast: 3 }, storage: { replicas: 1 }, recovery: { after: '3s' } }));
  await waitFor(
    () => cluster.client().policyCheckpoints('lost'),
    (cs) => cs.filter((c) => c.state === 'complete' && c.copies?.includes('b')).length >= 2,
    { timeoutMs: scaled(30_000), everyMs: 100, what: 'two checkpoints copied to b' },
  );
  const before = await runcCount(id, rootA);
  const lostAt = Date.now();
  await cluster.killAgent('a');
  await cluster.net.cut('a');
  const [recovery] = await waitFor(
    () => cluster.client().policyRecoveries('lost'),
    (rs) => rs.some((r) => r.status === 'restored'),
    { timeoutMs: scaled(40_000), everyMs: 200, what: 'the container restored on b' },
  );
  t.is(recovery?.targetNode, 'b');
  t.is(recovery?.lostNode, 'a');
  t.is(recovery?.fence, 'pending', 'a cannot be told yet');
  const latest = (await cluster.client().policyCheckpoints('lost')).filter((c) => c.containerName === id).at(-1);
  t.is(recovery?.checkpoint, latest?.id, 'restored from the latest checkpoint');
  t.true((recovery?.lostWorkMs ?? -1) >= 0 && (recovery?.lostWorkMs ?? Infinity) < Date.now() - lostAt + INTERVAL_MS * 2);
  t.is(await runningOnB(), 'running');
  const onB = await runcCount(id, rootB);
  // From memory, not from scratch: within two intervals of where it was when a was lost.
  t.true(onB > 10 && onB >= before - (INTERVAL_MS * 2) / 50, `count ${onB} on b, ${before} on a when it was lost`);
  t.is(await runcState(id, rootA), 'running', 'a partitioned node keeps running its copy until it hears from the controller');

  await cluster.net.heal('a');
  await cluster.startAgent('a');
  await waitFor(
    () => cluster.client().policyRecoveries('lost'),
    (rs) => rs.every((r) => r.fence !== 'pending'),
    { timeoutMs: scaled(30_000), everyMs: 200, what: 'the copy on a fenced' },
  );
  t.is(await runcState(id, rootA), undefined, 'stopped and removed on a');
  t.is(await runningOnB(), 'running', 'and still running on b');
  const after = await runcCount(id, rootB);
  t.true(after > onB, 'b keeps counting');
  await cluster.client().deletePolicy('lost');
});

/**
 * Two containers that take turns through mailbox files on a shared bind mount: A counts up when B has
 * acknowledged its last count, B when it sees A's next one. So at any instant A's count is B's or one
 * more, and a pair restored from one consistent cut keeps that; each writes its count to /tmp/count.
 *
 * Every file they write keeps one size: counts are written padded to 8 columns through `1<>` (open for
 * writing without truncating). CRIU records the size of each open file and refuses a restore where it
 * differs, and these files outlive the checkpoint: the originals go on writing after the cut, so a
 * shell frozen between an O_TRUNC open and its write once failed the restore ("shared/b has bad size 4
 * (expect 0)").
 */
const COUNT_WIDTH = '%8d\\n';
const PING = [
  '/bin/sh',
  '-c',
  `n=0; while true; do m=$(cat /shared/b 2>/dev/null); if [ "$m" -eq "$n" ] 2>/dev/null; then n=$((n+1)); printf '${COUNT_WIDTH}' $n 1<>/tmp/count; printf '${COUNT_WIDTH}' $n 1<>/shared/a; fi; sleep 0.01; done`,
];
const PONG = [
  '/bin/sh',
  '-c',
  `n=0; printf '${COUNT_WIDTH}' 0 1<>/shared/b; while true; do m=$(cat /shared/a 2>/dev/null); if [ "$m" -eq "$((n+1))" ] 2>/dev/null; then n=$((n+1)); printf '${COUNT_WIDTH}' $n 1<>/tmp/count; printf '${COUNT_WIDTH}' $n 1<>/shared/b; fi; sleep 0.01; done`,
];

/**
 * Both counts at one instant: the pair is held frozen while the files are read from the host. Counts
 * are rewritten in place at a fixed width, so a freeze mid-write cannot leave an empty file to read
 * (a truncating write once showed a "live pair" of 0 and 27).
 */
async function pairCounts(ping: string, pong: string): Promise<{ ping: number; pong: number }> {
  const agent = cluster.node('a').agent;
  const hold = await agent.hold({
    containers: [
      { runtime: 'runc', container: ping },
      { runtime: 'runc', container: pong },
    ],
    ttlMs: scaled(10_000),
  });
  try {
    const bundles = await agent.containers('runc');
    const countOf = async (id: string) => {
      const bundle = bundles.find((c) => c.id === id)?.bundle;
      return Number((await readFile(path.join(bundle as string, 'rootfs', 'tmp', 'count'), 'utf8')).trim());
    };
    return { ping: await countOf(ping), pong: await countOf(pong) };
  } finally {
    await agent.releaseHold(hold.id);
  }
}

test.serial('coordinated: a pair exchanging counts restores to a consistent pair; checkpoints taken apart do not', async (t) => {
  const root = cluster.node('a').runcRoot;
  const shared = path.join(scratch, 'shared');
  await mkdir(shared, { recursive: true });
  const binds = [{ source: shared, destination: '/shared' }];
  const [ping, pong] = [`pol-ping-${process.pid}`, `pol-pong-${process.pid}`];
  for (const id of [ping, pong, `${ping}-r`, `${pong}-r`]) containers.push({ id, root });
  await startRuncCounter(pong, scratch, { root, argv: PONG, binds });
  await startRuncCounter(ping, scratch, { root, argv: PING, binds });
  await waitFor(
    () => runcCount(pong, root),
    (n) => n >= 20,
    { what: 'the pair to exchange' },
  );
  const live = await pairCounts(ping, pong);
  t.true(live.ping - live.pong === 0 || live.ping - live.pong === 1, `live pair ${JSON.stringify(live)}`);

  await cluster.client().applyPolicy({
    ...policyOf('pair', ping),
    spec: {
      ...policyOf('pair', ping).spec,
      selector: { names: [ping, pong], runtime: 'runc' },
      coordinated: true,
      retention: { keepLast: 2 },
    },
  });
  // Two runs that each cut both containers: a run may also find none yet (the nodes' container listings are
  // cached for a second, and one taken just before the pair started does not show it), and succeed empty.
  const cuts = (rs: Awaited<ReturnType<typeof finishedRuns>>) => rs.filter((r) => r.status === 'succeeded' && r.checkpoints.length === 2);
  const runs = await waitFor(
    () => finishedRuns('pair'),
    (rs) => cuts(rs).length >= 2,
    { timeoutMs: scaled(30_000), everyMs: 100, what: 'two coordinated runs' },
  );
  const group = runs.find((r) => r.status === 'succeeded' && r.checkpoints.length === 2);
  t.truthy(group, JSON.stringify(runs));
  t.true((group?.groupFrozenMs ?? 0) > 0, 'the run says how long the group was frozen');
  await cluster.client().applyPolicy({ ...policyOf('pair', ping), spec: { ...policyOf('pair', ping).spec, suspend: true } });
  const kept = await cluster.client().policyCheckpoints('pair');
  const ofRun = (runId: string, name: string) => kept.find((c) => c.runId === runId && c.containerName === name);
  const runIds = [...new Set(kept.map((c) => c.runId))];
  t.true(runIds.length >= 2, 'two cuts kept');
  const [older, newer] = runIds as [string, string];

  // The originals go: the restored pair talks through the same mailboxes.
  await runcRemove(ping, root);
  await runcRemove(pong, root);
  const restorePair = async (pingFrom: string, pongFrom: string) => {
    await cluster.node('a').agent.restore(pingFrom, { name: `${ping}-r` });
    await cluster.node('a').agent.restore(pongFrom, { name: `${pong}-r` });
    const counts = await pairCounts(`${ping}-r`, `${pong}-r`);
    await runcRemove(`${ping}-r`, root);
    await runcRemove(`${pong}-r`, root);
    return counts;
  };
  const cut = await restorePair(ofRun(newer, ping)?.id as string, ofRun(newer, pong)?.id as string);
  t.true(cut.ping > 20, `restored from memory, not restarted: ${JSON.stringify(cut)}`);
  t.true(cut.ping - cut.pong === 0 || cut.ping - cut.pong === 1, `one cut restores consistent: ${JSON.stringify(cut)}`);
  // The same pair from checkpoints of two different cuts: what an uncoordinated policy could give.
  const mixed = await restorePair(ofRun(older, ping)?.id as string, ofRun(newer, pong)?.id as string);
  t.false(mixed.ping - mixed.pong === 0 || mixed.ping - mixed.pong === 1, `two cuts mixed are inconsistent: ${JSON.stringify(mixed)}`);
  await cluster.client().deletePolicy('pair');
});

test.serial('a hold never outlives its purpose: it expires by itself, and an agent killed while holding thaws on restart', async (t) => {
  const id = `pol-hold-${process.pid}`;
  const root = cluster.node('b').runcRoot;
  containers.push({ id, root });
  await startCounting(id, scratch, root);
  const hold = { containers: [{ runtime: 'runc' as const, container: id }], ttlMs: scaled(1_000) };
  await cluster.node('b').agent.hold(hold);
  t.is(await runcState(id, root), 'paused');
  await waitFor(
    () => runcState(id, root),
    (s) => s === 'running',
    { timeoutMs: scaled(10_000), what: 'the hold to expire' },
  );

  await cluster.node('b').agent.hold({ ...hold, ttlMs: scaled(600_000) });
  t.is(await runcState(id, root), 'paused');
  await cluster.killAgent('b');
  t.is(await runcState(id, root), 'paused', 'a killed agent cannot thaw');
  await cluster.startAgent('b');
  t.is(await runcState(id, root), 'running', 'thawed by the agent as it started again');
  const n = await runcCount(id, root);
  await waitFor(
    () => runcCount(id, root),
    (m) => m > n,
    { what: 'the counter to move again' },
  );
});
