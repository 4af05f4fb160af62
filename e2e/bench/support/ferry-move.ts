/**
 * One Ferry migration of the benchmark workload from node a to node b through the controller (POST
 * /migrate), as the migration benchmarks measure it: the workload's own longest gap, the client's wall
 * clock, and the controller's figures and step times.
 */
import type { MigrateParams } from '../../../controller/src/client.js';
import type { MigrationEvent, MigrationRecord } from '../../../controller/src/migration/types.js';
import type { TestCluster } from '../../support/cluster.js';
import type { WorkloadStats } from '../../support/workload-bin.js';
import type { BenchWorkload } from './bench-workload.js';

/** Milliseconds since t0 (performance.now()), to a tenth. */
export const elapsed = (t0: number) => Math.round((performance.now() - t0) * 10) / 10;

/** What every migration benchmark sample has, Ferry's or a baseline's. */
export interface MoveSample {
  /** The longest gap between the workload's ticks across the move: the downtime it saw. */
  downtimeMs: number;
  /** Wall clock of the whole operation, until the container runs only on b and nothing is left behind. */
  totalMs: number;
  /** From the start of the stopping checkpoint to the restore returning on b, as the caller sees it. */
  stopToRestoredMs: number;
  frozenMs: number;
  /** The workload's longest gap before the move: must be far below downtimeMs for that to mean anything. */
  gapBeforeMs: number;
  /** Bytes that crossed from a to b (all pre-copy rounds included). */
  bytes: number;
}

export interface FerrySample extends MoveSample {
  migration: string;
  controllerDowntimeMs: number;
  dumpMs: number;
  transferMs: number;
  agentRestoreMs: number;
  /** Each step's "done in N ms" from the migration's events. */
  steps: Record<string, number>;
  events: MigrationEvent[];
}

export interface FerryMove {
  sample: FerrySample;
  record: MigrationRecord;
  before: WorkloadStats;
  after: WorkloadStats;
}

/**
 * Follows a migration's events to its 'finished' event. A stream that breaks (fetch gives up on a body
 * silent for 300 s, and an emulated 1 GiB step can be that quiet) is opened again; it replays from the
 * first event, so events already seen are skipped by their sequence number.
 */
async function followEvents(cluster: TestCluster, id: string): Promise<MigrationEvent[]> {
  const events: MigrationEvent[] = [];
  for (let attempt = 1; ; attempt++) {
    try {
      for await (const e of cluster.client().events(id)) {
        if (e.seq <= (events.at(-1)?.seq ?? 0)) continue;
        events.push(e);
        if (e.type === 'finished') return events;
      }
      if (events.at(-1)?.type === 'finished') return events;
    } catch (err) {
      if (attempt >= 10) throw err;
      process.stderr.write(
        `  (event stream of ${id} broke after ${events.length} events: ${(err as Error).message}; following it again)\n`,
      );
    }
  }
}

/**
 * Starts the workload as `name` on a, migrates it to b with `request` (strategy and limits), and returns
 * the figures once it ticks on b. The workload is removed from both nodes afterwards, whatever happened.
 */
export async function ferryMove(
  cluster: TestCluster,
  workload: BenchWorkload,
  name: string,
  request: Omit<MigrateParams, 'container' | 'targetNode'>,
): Promise<FerryMove> {
  const before = await workload.start(name);
  try {
    const t0 = performance.now();
    const accepted = await cluster
      .client()
      .migrate({ container: { node: 'a', runtime: workload.runtime, name }, targetNode: 'b', ...request });
    const events = await followEvents(cluster, accepted.id);
    const totalMs = elapsed(t0);
    const m: MigrationRecord = await cluster.client().migration(accepted.id);
    if (m.status !== 'succeeded')
      throw new Error(`migration ${m.id} ${m.status}: ${JSON.stringify(m.error)} ${JSON.stringify(m.rollback)}`);
    const after = await workload.statsAfter(name, before);
    const steps: Record<string, number> = {};
    for (const e of events) {
      const done = /^(\w+) done in (\d+) ms$/.exec(e.message);
      if (done?.[1] && done[2]) steps[done[1]] = Number(done[2]);
    }
    const f = m.figures;
    const roundBytes = m.rounds.reduce((sum, r) => sum + r.bytesSent, 0);
    const sample: FerrySample = {
      migration: m.id,
      downtimeMs: after.maxGapMs,
      totalMs,
      stopToRestoredMs: f.downtimeMs ?? Number.NaN,
      frozenMs: f.frozenTimeMs ?? Number.NaN,
      gapBeforeMs: before.maxGapMs,
      bytes: (f.bytesSent ?? Number.NaN) + roundBytes,
      controllerDowntimeMs: f.downtimeMs ?? Number.NaN,
      dumpMs: f.dumpMs ?? Number.NaN,
      transferMs: f.transferMs ?? Number.NaN,
      agentRestoreMs: f.restoreMs ?? Number.NaN,
      steps,
      events,
    };
    return { sample, record: m, before, after };
  } finally {
    await workload.remove(name);
  }
}
