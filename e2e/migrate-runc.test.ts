/**
 * Live migration between two nodes (network namespaces, real TCP, real agents, real CRIU and runc): a
 * counting container moves from a to b through POST /migrate and keeps its count; bad requests are refused
 * with the field named; a failing target restore rolls back and leaves the source running.
 */
import test from 'ava';
import { execa } from 'execa';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isFerryError } from '../agent/src/errors.js';
import type { MigrationEvent } from '../controller/src/migration/types.js';
import { ControllerClient } from '../controller/src/client.js';
import { RESTORE_PRIOR_MS } from '../controller/src/migration/precopy.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { sample } from './support/metrics.js';
import { runcCount, runcRemove, runcState, startRuncCounter, startCounting } from './support/runc.js';
import { readWorkloadStats, WORKLOAD_STATS_FILE, workloadArgv, workloadRootfs } from './support/workload-bin.js';
import { expectCountResumed, waitFor } from './support/workload.js';

const run = promisify(execFile);
const FERRY = fileURLToPath(new URL('../bin/ferry.js', import.meta.url));
let cluster: TestCluster;
let scratch: string;
const started: { id: string; root: string }[] = [];
const tag = `m${process.pid % 100000}`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-migrate-'));
  cluster = await startTestCluster(tag, ['a', 'b'], { runtimes: ['runc'], subnet: `10.79.${process.pid % 250}.0/24` });
});

test.after.always(async () => {
  for (const { id, root } of started) await runcRemove(id, root);
  for (const n of ['a', 'b']) {
    for (const { id } of started) await runcRemove(id, cluster?.node(n).runcRoot);
  }
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

async function counterOn(node: string, what: string): Promise<string> {
  const id = `mig-${what}-${process.pid}`;
  const root = cluster.node(node).runcRoot;
  started.push({ id, root });
  await startCounting(id, scratch, root);
  return id;
}

async function eventsOf(id: string): Promise<MigrationEvent[]> {
  const events: MigrationEvent[] = [];
  for await (const e of cluster.client().events(id)) events.push(e);
  return events;
}

const codeOf = (err: unknown) => (isFerryError(err) ? err.code : String(err));
const fieldOf = (err: unknown) => (isFerryError(err) ? err.details?.field : undefined);

test.serial(
  'runc: a container moves from a to b and keeps its state; downtime seen from inside; stop-and-copy for want of memory tracking',
  async (t) => {
    // The gap-detecting workload with 16 MiB of live memory: its count continues from memory, and the
    // longest gap between its ticks is the downtime as the workload itself saw it.
    const id = `mig-move-${process.pid}`;
    const rootA = cluster.node('a').runcRoot;
    const rootB = cluster.node('b').runcRoot;
    started.push({ id, root: rootA });
    await workloadRootfs(path.join(scratch, id, 'rootfs'));
    await startRuncCounter(id, scratch, { root: rootA, argv: workloadArgv({ rssMib: 16, dirtyMibPerS: 0 }) });
    const before = await waitFor(
      () => runcCount(id, rootA),
      (n) => n >= 10,
      { what: `${id} to count` },
    );
    const statsOn = (root: string) =>
      readWorkloadStats(async () => (await run('runc', ['--root', root, 'exec', id, 'cat', WORKLOAD_STATS_FILE])).stdout);
    const gapBefore = (await statsOn(rootA)).maxGapMs;

    const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
    t.is(accepted.status, 'running');
    const events = await eventsOf(accepted.id);
    const m = await cluster.client().migration(accepted.id);
    t.is(m.status, 'succeeded', JSON.stringify(m.error));
    t.is(m.strategy?.used, 'stopcopy');
    t.regex(m.strategy?.reason ?? '', /no memory tracking/);

    await expectCountResumed(() => runcCount(id, rootB), before);
    t.is(await runcState(id, rootA), undefined, 'the source no longer runs');
    t.is(await runcState(id, rootB), 'running');

    t.true((m.figures.frozenTimeMs ?? 0) > 0, "CRIU's frozen time is recorded");
    t.true((m.figures.downtimeMs ?? 0) >= (m.figures.frozenTimeMs ?? 0), 'downtime covers the frozen time');
    t.true((m.figures.bytesSent ?? 0) > 0);
    t.true((m.figures.totalMs ?? 0) >= (m.figures.downtimeMs ?? 0));
    const inside = await statsOn(rootB);
    t.true(inside.maxGapMs > gapBefore, 'the migration is the longest gap the workload saw');
    t.true(inside.maxGapMs >= (m.figures.frozenTimeMs ?? 0), 'the workload was stopped at least as long as CRIU froze it');
    t.true(inside.maxGapMs <= (m.figures.downtimeMs ?? 0) + 250, 'the controller measured the downtime from outside, within a tick or two');
    t.log(
      `downtime: ${inside.maxGapMs} ms seen by the workload, ${m.figures.downtimeMs} ms by the controller, CRIU frozen ${m.figures.frozenTimeMs} ms; ${m.figures.bytesSent} bytes, total ${m.figures.totalMs} ms`,
    );

    const stepsStarted = events.filter((e) => e.type === 'step' && e.message.endsWith('started')).map((e) => e.step);
    t.deepEqual(stepsStarted, ['preflight', 'checkpoint', 'transfer', 'restore', 'verify', 'cleanup']);
    t.is(events.at(-1)?.type, 'finished');
    t.deepEqual(
      events.map((e) => e.seq),
      events.map((_, i) => i + 1),
      'events arrive once each, in order',
    );
    // Nothing of the migration is left in either store.
    for (const n of ['a', 'b']) t.deepEqual(await cluster.node(n).agent.checkpoints(), [], `no checkpoint left on ${n}`);

    // What Prometheus would scrape: the controller counted the migration, each agent its side of it.
    const controller = await cluster.client().metrics();
    t.is(sample(controller, 'ferry_controller_migrations_total', { strategy: 'stopcopy', status: 'succeeded' }), 1);
    t.is(sample(controller, 'ferry_controller_migration_downtime_seconds_count', { strategy: 'stopcopy' }), 1);
    t.true((sample(controller, 'ferry_controller_migration_downtime_seconds_sum') ?? 0) * 1000 >= (m.figures.frozenTimeMs ?? 1));
    const [onA, onB] = await Promise.all(['a', 'b'].map((n) => cluster.node(n).agent.metrics()));
    t.is(sample(onA ?? '', 'ferry_agent_operations_total', { operation: 'checkpoint', result: 'ok', node: 'a' }), 1);
    t.is(sample(onA ?? '', 'ferry_agent_checkpoint_frozen_seconds_count', { runtime: 'runc' }), 1);
    t.is(sample(onA ?? '', 'ferry_agent_transfer_bytes_total', { direction: 'sent' }), m.figures.bytesSent);
    t.is(sample(onB ?? '', 'ferry_agent_operations_total', { operation: 'import', result: 'ok', node: 'b' }), 1);
    t.is(sample(onB ?? '', 'ferry_agent_operations_total', { operation: 'restore', result: 'ok' }), 1);
  },
);

test.serial('bad requests: 400 naming the field, 404 for unknown nodes and containers, 409 for a second migration', async (t) => {
  const migrate = (body: unknown) => cluster.client().migrate(body as Parameters<ReturnType<TestCluster['client']>['migrate']>[0]);
  const noTarget = await t.throwsAsync(migrate({ container: { node: 'a', runtime: 'runc', name: 'x' } }));
  t.is(codeOf(noTarget), 'bad_request');
  t.is(fieldOf(noTarget), 'targetNode');
  const badRuntime = await t.throwsAsync(migrate({ container: { node: 'a', runtime: 'lxc', name: 'x' }, targetNode: 'b' }));
  t.is(fieldOf(badRuntime), 'container.runtime');
  const traversal = await t.throwsAsync(migrate({ container: { node: 'a', runtime: 'runc', name: '../etc' }, targetNode: 'b' }));
  t.is(fieldOf(traversal), 'container.name');
  const sameNode = await t.throwsAsync(migrate({ container: { node: 'a', runtime: 'runc', name: 'x' }, targetNode: 'a' }));
  t.is(fieldOf(sameNode), 'targetNode');
  const noNode = await t.throwsAsync(migrate({ container: { node: 'a', runtime: 'runc', name: 'x' }, targetNode: 'zz' }));
  t.is(codeOf(noNode), 'node_not_found');
  t.is(fieldOf(noNode), 'targetNode');
  const neither = await t.throwsAsync(migrate({ targetNode: 'b' }));
  t.is(fieldOf(neither), 'container');
  const pod = await t.throwsAsync(cluster.client().migratePod({ pod: { namespace: 'shop', name: 'orders-0' }, targetNode: 'b' }));
  t.is(codeOf(pod), 'bad_request', 'standalone, pods are not migrated');
  t.is(fieldOf(pod), 'pod');
  const noContainer = await t.throwsAsync(migrate({ container: { node: 'a', runtime: 'runc', name: 'nonexistent' }, targetNode: 'b' }));
  t.is(codeOf(noContainer), 'container_not_found');
  const noMigration = await t.throwsAsync(cluster.client().migration('m-0-000000'));
  t.is(codeOf(noMigration), 'migration_not_found');

  const intruder = new ControllerClient(cluster.client().url, 'wrong-token');
  t.is(codeOf(await t.throwsAsync(intruder.migrations())), 'unauthorized');
  t.is(
    codeOf(await t.throwsAsync(intruder.migrate({ container: { node: 'a', runtime: 'runc', name: 'x' }, targetNode: 'b' }))),
    'unauthorized',
  );
  const spec = (await (await fetch(`${cluster.client().url}/openapi.json`)).json()) as { paths: Record<string, unknown> };
  t.truthy(spec.paths['/migrate'], 'the OpenAPI document is served without a token and describes /migrate');

  const id = await counterOn('a', 'twice');
  const first = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
  const second = await t.throwsAsync(cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' }));
  t.is(codeOf(second), 'conflict');
  t.is(isFerryError(second) ? second.details?.migration : undefined, first.id);
  await eventsOf(first.id);
  const done = await cluster.client().migration(first.id);
  t.is(done.status, 'succeeded');
  // b restored a container in the first test: its measured restore time, not the prior, feeds the estimate.
  const measured = (await cluster.node('b').agent.stats()).restoreMs.runc;
  t.true((measured ?? 0) > 0);
  t.not(done.restoreEstimateMs, RESTORE_PRIOR_MS);
});

test.serial(
  'a target restore that fails rolls back: the source runs again from its own checkpoint, the record names the step',
  async (t) => {
    const id = await counterOn('a', 'rollback');
    const rootA = cluster.node('a').runcRoot;
    // The target already has a container under runc's state dir with that name but not in runc's list:
    // a stale state directory makes runc refuse the restore ("container with id exists").
    const { mkdir } = await import('node:fs/promises');
    await mkdir(path.join(cluster.node('b').runcRoot, id), { recursive: true });
    const before = await runcCount(id, rootA);

    const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
    const events = await eventsOf(accepted.id);
    const m = await cluster.client().migration(accepted.id);
    t.is(m.status, 'failed');
    t.is(m.error?.step, 'restore', JSON.stringify(m.error));
    t.regex(m.rollback?.outcome ?? '', /restored on a from its own checkpoint/);
    t.true(events.some((e) => e.type === 'rollback'));
    await expectCountResumed(() => runcCount(id, rootA), before);
    t.is(await runcState(id, cluster.node('b').runcRoot), undefined, 'nothing runs on the target');
    await rm(path.join(cluster.node('b').runcRoot, id), { recursive: true, force: true });
  },
);

test.serial('CLI: nodes and migrations as tables and JSON; a bad flag value is named', async (t) => {
  const ferry = (...args: string[]) =>
    execa(process.execPath, [FERRY, '--controller', cluster.client().url, '--controller-token', cluster.controllerToken, ...args], {
      reject: false,
    });
  const nodes = await ferry('nodes');
  t.is(nodes.exitCode, 0, nodes.stderr);
  t.regex(nodes.stdout, /^NAME\s+URL\s+HEALTHY/m);
  t.regex(nodes.stdout, /^a\s+http:\/\/\S+\s+yes/m);
  const list = await ferry('--json', 'migrations');
  const migrations = JSON.parse(list.stdout) as { status: string }[];
  t.true(migrations.some((m) => m.status === 'succeeded'));
  const badPod = await ferry('migrate-pod', 'orders-0', '--to', 'b');
  t.is(badPod.exitCode, 1);
  t.regex(badPod.stderr, /<namespace\/name> must look like shop\/orders-0/);
  const standalonePod = await ferry('migrate-pod', 'shop/orders-0', '--to', 'b');
  t.regex(standalonePod.stderr, /pods are migrated in Kubernetes mode only/);
  const bad = await ferry('migrate', 'x', '--from', 'a', '--to', 'b', '-r', 'runc', '--max-downtime', 'soon');
  t.is(bad.exitCode, 1);
  t.regex(bad.stderr, /--max-downtime must be a positive integer/);
  const unknown = await ferry('migrate', 'nonexistent', '--from', 'a', '--to', 'b', '-r', 'runc');
  t.is(unknown.exitCode, 1);
  t.regex(unknown.stderr, /^error: no runc container 'nonexistent' on node a/m);
  t.regex(unknown.stderr, /^hint: /m);
});
