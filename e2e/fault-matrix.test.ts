/**
 * The fault-injection matrix: each operation under each fault, TRIALS times, on real nodes (network
 * namespaces, real agents, controller, CRIU and runc). After every trial, whatever happened, the
 * invariants of e2e/support/faults.ts must hold: exactly one running copy of the workload, counting on
 * from before, on the node the outcome implies, and no checkpoint listed anywhere that fails
 * verification. The matrix of passed/run counts is printed at the end.
 *
 *   FERRY_FAULT_TRIALS=5 npx ava --timeout=40m e2e/fault-matrix.test.ts    # npm run test:faults
 *
 * Operations: a migration a -> b (stop-and-copy), and a leave-running checkpoint on a (as policies take
 * them). Faults: none (control), a slow link (tc), the target agent killed mid-transfer, the link cut
 * mid-transfer, the target's disk full (a 1 MiB tmpfs image store), the controller killed mid-transfer,
 * the source's disk full, the agent killed as it starts a checkpoint. Clock skew is left out: only the
 * controller's clock decides (schedules, leases); agents compare no times.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isFerryError } from '../agent/src/errors.js';
import type { MigrationRecord } from '../controller/src/migration/types.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { assertOneCopy, migrateWithFault, onSlowLink, whenWriting, withFullDisk } from './support/faults.js';
import { runcRemove, startCounting } from './support/runc.js';

const TRIALS = Number(process.env.FERRY_FAULT_TRIALS ?? 1);
let cluster: TestCluster;
let scratch: string;
const started: string[] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-fault-matrix-'));
  cluster = await startTestCluster(`x${process.pid % 100000}`, ['a', 'b'], {
    runtimes: ['runc'],
    subnet: `10.93.${process.pid % 250}.0/24`,
  });
});

test.after.always(async () => {
  for (const id of started) for (const n of ['a', 'b']) await runcRemove(id, cluster?.node(n).runcRoot);
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** What a trial expects: where the one copy runs afterwards. Throws when the operation itself did something else. */
type Trial = (id: string) => Promise<'a' | 'b'>;

const expectFailed = (m: MigrationRecord, step: string): 'a' => {
  if (m.status === 'succeeded') throw new Error(`the migration succeeded despite the fault`);
  if (m.error?.step !== step) throw new Error(`failed at ${m.error?.step}, expected ${step}: ${m.error?.message}`);
  return 'a';
};

const migrate = async (id: string) => {
  const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
  return cluster.finished(accepted.id);
};

const checkpointOnA = (id: string) => cluster.node('a').agent.checkpoint({ runtime: 'runc', container: id, leaveRunning: true });

const MATRIX: Record<string, Record<string, Trial>> = {
  'migrate a -> b': {
    none: async (id) => {
      const m = await migrate(id);
      if (m.status !== 'succeeded') throw new Error(`failed without a fault: ${m.error?.message}`);
      return 'b';
    },
    'slow link': async (id) => {
      const m = await onSlowLink(cluster, () => migrate(id));
      if (m.status !== 'succeeded') throw new Error(`failed on a slow link: ${m.error?.message}`);
      return 'b';
    },
    'target agent killed': async (id) => {
      try {
        const m = await onSlowLink(cluster, async () =>
          cluster.finished((await migrateWithFault(cluster, id, () => cluster.killAgent('b'))).id),
        );
        return expectFailed(m, 'transfer');
      } finally {
        await cluster.startAgent('b');
      }
    },
    'link cut': async (id) => {
      try {
        const m = await onSlowLink(cluster, async () =>
          cluster.finished((await migrateWithFault(cluster, id, () => cluster.net.cut('b'))).id),
        );
        return expectFailed(m, 'transfer');
      } finally {
        await cluster.net.heal('b');
      }
    },
    'target disk full': (id) => withFullDisk(cluster, 'b', 1, async () => expectFailed(await migrate(id), 'transfer')),
    'controller killed': async (id) => {
      const accepted = await onSlowLink(cluster, async () => {
        const m = await migrateWithFault(cluster, id, () => cluster.killController());
        await cluster.startController();
        return m;
      });
      return expectFailed(await cluster.finished(accepted.id), 'transfer');
    },
  },
  'checkpoint on a (leave-running)': {
    none: async (id) => {
      await checkpointOnA(id);
      return 'a';
    },
    'source disk full': (id) =>
      withFullDisk(cluster, 'a', 1, async (): Promise<'a'> => {
        const err = await checkpointOnA(id).then(
          () => undefined,
          (e: unknown) => e,
        );
        if (!isFerryError(err)) throw new Error(`the checkpoint did not fail on a full disk: ${String(err)}`);
        if (err.details?.containerState !== 'running') throw new Error(`after the failure the container is ${err.details?.containerState}`);
        return 'a';
      }),
    'agent killed': async (id) => {
      const writing = whenWriting(cluster, 'a', '.partial-');
      try {
        const call = checkpointOnA(id).catch(() => undefined);
        await writing.started;
        await cluster.killAgent('a');
        await call;
      } finally {
        writing.close();
        await cluster.startAgent('a');
      }
      return 'a';
    },
  },
};

test.serial(`fault matrix: every operation under every fault, ${TRIALS} trial(s) each, ends with exactly one running copy`, async (t) => {
  t.timeout(Math.max(10, TRIALS * 8) * 60_000);
  const results: { op: string; fault: string; passed: number; failures: string[] }[] = [];
  let n = 0;
  for (const [op, faults] of Object.entries(MATRIX)) {
    for (const [fault, trial] of Object.entries(faults)) {
      const row = { op, fault, passed: 0, failures: [] as string[] };
      for (let i = 0; i < TRIALS; i++) {
        const id = `fm-${++n}-${process.pid}`;
        started.push(id);
        const before = await startCounting(id, scratch, cluster.node('a').runcRoot);
        try {
          const on = await trial(id);
          await assertOneCopy(cluster, id, on, before);
          row.passed++;
        } catch (err) {
          row.failures.push(`${id}: ${(err as Error).message}`);
        } finally {
          for (const node of ['a', 'b']) await runcRemove(id, cluster.node(node).runcRoot);
          for (const node of ['a', 'b']) {
            for (const m of await cluster
              .node(node)
              .agent.checkpoints()
              .catch(() => [])) {
              await cluster
                .node(node)
                .agent.deleteCheckpoint(m.id)
                .catch(() => undefined);
            }
          }
        }
      }
      results.push(row);
    }
  }
  const width = Math.max(...results.map((r) => `${r.op} | ${r.fault}`.length));
  t.log(
    [
      `fault matrix (${TRIALS} trial(s) per cell): passed/run`,
      ...results.map((r) => `  ${`${r.op} | ${r.fault}`.padEnd(width)}  ${r.passed}/${TRIALS}`),
    ].join('\n'),
  );
  const failures = results.flatMap((r) => r.failures.map((f) => `${r.op} | ${r.fault}: ${f}`));
  t.deepEqual(failures, [], 'every trial keeps exactly one running copy');
});
