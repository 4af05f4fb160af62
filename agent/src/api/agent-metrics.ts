/**
 * What an agent measures: every operation's count by outcome and duration (OperationMetrics), and for
 * checkpoints, restores and transfers the figures an operator tunes by: CRIU's frozen time (the
 * workload's pause), bytes and pages written, restore time, transfer bandwidth.
 */
import { Counter, Histogram, type Registry } from 'prom-client';
import type { RestoreResult } from '../agent.js';
import type { Manifest } from '../store/manifest.js';
import type { SendResult } from '../transfer.js';
import { BYTE_BUCKETS, createRegistry, DURATION_BUCKETS, OperationMetrics } from './metrics.js';

export class AgentMetrics {
  readonly registry: Registry;
  readonly operations: OperationMetrics;
  private readonly frozen: Histogram<'runtime'>;
  private readonly checkpointBytes: Histogram<'runtime' | 'kind'>;
  private readonly pagesWritten: Counter<'runtime' | 'kind'>;
  private readonly restoreSeconds: Histogram<'runtime'>;
  private readonly transferBytes: Counter<'direction'>;

  constructor(node: string) {
    this.registry = createRegistry('agent', { node });
    const registers = [this.registry];
    this.operations = new OperationMetrics(this.registry, 'ferry_agent');
    this.frozen = new Histogram({
      name: 'ferry_agent_checkpoint_frozen_seconds',
      help: "How long CRIU kept the container frozen (the workload's pause; whole dumps only pause it)",
      labelNames: ['runtime'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.checkpointBytes = new Histogram({
      name: 'ferry_agent_checkpoint_bytes',
      help: 'Size of each checkpoint as stored (memory, files and metadata)',
      labelNames: ['runtime', 'kind'],
      buckets: BYTE_BUCKETS,
      registers,
    });
    this.pagesWritten = new Counter({
      name: 'ferry_agent_checkpoint_pages_written_total',
      help: 'Memory pages CRIU wrote (pages a parent already held are not written again)',
      labelNames: ['runtime', 'kind'],
      registers,
    });
    this.restoreSeconds = new Histogram({
      name: 'ferry_agent_restore_seconds',
      help: 'Wall time of restores, verification included',
      labelNames: ['runtime'],
      buckets: DURATION_BUCKETS,
      registers,
    });
    this.transferBytes = new Counter({
      name: 'ferry_agent_transfer_bytes_total',
      help: 'Checkpoint bytes sent to and received from other nodes',
      labelNames: ['direction'],
      registers,
    });
  }

  checkpointed(m: Manifest): void {
    const runtime = m.container.runtime;
    this.checkpointBytes.observe({ runtime, kind: m.kind }, m.totalBytes);
    if (!m.stats) return;
    this.pagesWritten.inc({ runtime, kind: m.kind }, m.stats.pagesWritten);
    if (m.kind === 'full') this.frozen.observe({ runtime }, m.stats.frozenTimeMs / 1000);
  }

  restored(r: RestoreResult): void {
    this.restoreSeconds.observe({ runtime: r.container.runtime }, r.timings.restoreMs / 1000);
  }

  sent(r: SendResult): void {
    this.transferBytes.inc({ direction: 'sent' }, r.bytes);
  }

  received(m: Manifest): void {
    this.transferBytes.inc({ direction: 'received' }, m.totalBytes);
  }
}

/** Runs an operation under the agent's metrics and records what its result says; the result passes through. */
export async function measured<T>(metrics: AgentMetrics, operation: string, fn: () => Promise<T>, record?: (r: T) => void): Promise<T> {
  const result = await metrics.operations.time(operation, fn);
  record?.(result);
  return result;
}
