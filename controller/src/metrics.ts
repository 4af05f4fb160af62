/**
 * What the controller measures, from what it already records: each finished migration (outcome,
 * strategy, downtime, total time, rounds, the step and code of a failure), each policy run (outcome,
 * scheduler lag), each policy checkpoint, and the nodes' health and migrations in flight at scrape time.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createRegistry, DURATION_BUCKETS } from '../../agent/src/api/metrics.js';
import type { Orchestrator } from './migration/orchestrator.js';
import type { MigrationRecord } from './migration/types.js';
import type { NodeRegistry } from './nodes.js';
import type { PolicyEvent, PolicyEvents } from './policy/events.js';

export interface ControllerMetricSources {
  orchestrator: Orchestrator;
  policyEvents: PolicyEvents;
  nodes: NodeRegistry;
}

export function createControllerMetrics({ orchestrator, policyEvents, nodes }: ControllerMetricSources): Registry {
  const registry = createRegistry('controller');
  const registers = [registry];
  const migrations = new Counter({
    name: 'ferry_controller_migrations_total',
    help: 'Finished migrations by strategy used and outcome',
    labelNames: ['strategy', 'status'],
    registers,
  });
  const failures = new Counter({
    name: 'ferry_controller_migration_failures_total',
    help: 'Failed or rolled-back migrations by the step that failed and its error code',
    labelNames: ['step', 'code'],
    registers,
  });
  const downtime = new Histogram({
    name: 'ferry_controller_migration_downtime_seconds',
    help: 'From the stopping dump to the restore returning on the target, for migrations that succeeded',
    labelNames: ['strategy'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const total = new Histogram({
    name: 'ferry_controller_migration_duration_seconds',
    help: 'Whole migrations that succeeded, preflight to cleanup',
    labelNames: ['strategy'],
    buckets: DURATION_BUCKETS,
    registers,
  });
  const rounds = new Histogram({
    name: 'ferry_controller_migration_precopy_rounds',
    help: 'Pre-copy rounds per migration that ran any',
    buckets: [1, 2, 3, 4, 6, 8, 12, 16],
    registers,
  });
  new Gauge({
    name: 'ferry_controller_migrations_running',
    help: 'Migrations in flight',
    registers,
    collect() {
      this.set(orchestrator.running());
    },
  });
  new Gauge({
    name: 'ferry_controller_nodes',
    help: 'Registered nodes by health',
    labelNames: ['healthy'],
    registers,
    collect() {
      const list = nodes.list();
      const healthy = list.filter((n) => n.healthy).length;
      this.set({ healthy: 'true' }, healthy);
      this.set({ healthy: 'false' }, list.length - healthy);
    },
  });
  orchestrator.onFinished((m: MigrationRecord) => {
    const strategy = m.strategy?.used ?? 'none';
    migrations.inc({ strategy, status: m.status });
    if (m.error) failures.inc({ step: m.error.step, code: m.error.code });
    if (m.status !== 'succeeded') return;
    if (m.figures.downtimeMs !== undefined) downtime.observe({ strategy }, m.figures.downtimeMs / 1000);
    if (m.figures.totalMs !== undefined) total.observe({ strategy }, m.figures.totalMs / 1000);
    if (m.rounds.length) rounds.observe(m.rounds.length);
  });

  const runs = new Counter({
    name: 'ferry_controller_policy_runs_total',
    help: 'Finished policy runs by outcome',
    labelNames: ['status'],
    registers,
  });
  const lag = new Histogram({
    name: 'ferry_controller_scheduler_lag_seconds',
    help: 'How late scheduled policy runs started after they were due',
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });
  const checkpoints = new Counter({
    name: 'ferry_controller_policy_checkpoints_total',
    help: 'Checkpoints taken by policies, by outcome',
    labelNames: ['result'],
    registers,
  });
  const recoveries = new Counter({
    name: 'ferry_controller_recoveries_total',
    help: "Containers restored elsewhere after their node was lost, and lost nodes' copies fenced",
    labelNames: ['event'],
    registers,
  });
  policyEvents.subscribeAll((e: PolicyEvent) => {
    if (e.type === 'run-started' && typeof e.data?.lagMs === 'number') lag.observe(Math.max(0, e.data.lagMs) / 1000);
    else if (e.type === 'run-finished') runs.inc({ status: String(e.data?.status ?? 'unknown') });
    else if (e.type === 'checkpoint') checkpoints.inc({ result: 'complete' });
    else if (e.type === 'checkpoint-failed') checkpoints.inc({ result: String(e.data?.code ?? 'failed') });
    else if (e.type === 'recovered' || e.type === 'fenced') recoveries.inc({ event: e.type });
  });
  return registry;
}
