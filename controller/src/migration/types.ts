/** The shape of a migration: what was asked, and the record the controller journals as it goes. */
import type { MergeOutcome } from '../../../agent/src/agent.js';
import type { RuntimeName } from '../../../agent/src/runtimes/types.js';
import type { RoundFigures } from './precopy.js';

/** hybrid: pre-copy rounds while the container runs, then a lazy final dump whose last delta follows on demand. */
export const STRATEGIES = ['auto', 'precopy', 'stopcopy', 'postcopy', 'hybrid'] as const;
export type Strategy = (typeof STRATEGIES)[number];
/** How the target loads the restored container's memory (preflight.ts, chooseMemoryLoad). */
export const MEMORY_LOADS = ['auto', 'eager', 'lazy'] as const;
export type MemoryLoad = (typeof MEMORY_LOADS)[number];

export interface MigrationRequest {
  container: { node: string; runtime: RuntimeName; id?: string; name?: string };
  targetNode: string;
  strategy: Strategy;
  /** Downtime the pre-copy rounds aim for before the final dump. */
  maxDowntimeMs: number;
  maxRounds: number;
  /** Pre-copy gives up when it has sent this many times the container's memory. */
  maxBytesFactor: number;
  /** eager: all memory copied in before the container resumes; lazy: loaded from the target's images after. */
  memoryLoad?: MemoryLoad;
}

/** Kubernetes mode: a pod moved as a whole to another node (kube/pod-mover.ts). */
export interface PodMigrationRequest {
  pod: { namespace: string; name: string };
  targetNode: string;
  /** How long the replacement pod may take to run and be Ready before the migration rolls back. */
  readyTimeoutMs: number;
}

export const isPodRequest = (r: MigrationRequest | PodMigrationRequest): r is PodMigrationRequest => 'pod' in r;

/** A container migration's request; the container steps never see a pod's. */
export function containerRequestOf(m: { request: MigrationRequest | PodMigrationRequest }): MigrationRequest {
  if (isPodRequest(m.request)) throw new Error('a pod migration went down the container path');
  return m.request;
}

/** What a pod migration knows beyond a container's: the pod, its containers' checkpoints, the hold, the replacement. */
export interface PodMigrationState {
  namespace: string;
  name: string;
  uid: string;
  containers: { name: string; id: string; checkpointId: string }[];
  /** The source's containers frozen together on the source node, from the dumps until the end. */
  holdId?: string;
  /** The replacement pod on the target node, named before it is created so that a restart finds it. */
  replacement?: string;
}

/**
 * The steps in order. Each is journaled (step + "started" event) before it acts, so a restarted controller
 * knows what may have happened and settles from there.
 */
/** `pages` is post-copy's: the target runs while its memory still arrives from the source's page server. */
export const STEPS = ['preflight', 'rounds', 'checkpoint', 'transfer', 'restore', 'pages', 'verify', 'cleanup'] as const;
export type Step = (typeof STEPS)[number] | 'rollback' | 'done';

export type MigrationStatus = 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface MigrationError {
  code: string;
  message: string;
  step: Step;
  hint?: string;
  /** The lines of CRIU's log that explain a CRIU failure on either node. */
  criuLog?: string[];
}

export interface MigrationFigures {
  /** CRIU's own frozen time of the final dump. */
  frozenTimeMs?: number;
  /** Pages the final dump wrote: all of memory for stop-and-copy, the last delta after pre-copy. */
  finalPagesWritten?: number;
  dumpMs?: number;
  transferMs?: number;
  bytesSent?: number;
  bandwidthBytesPerSecond?: number;
  restoreMs?: number;
  /**
   * From the start of the stopping dump to the restore returning on the target, as the controller saw it:
   * an upper bound of the time the workload ran nowhere.
   */
  downtimeMs?: number;
  estimatedDowntimeMs?: number;
  /**
   * Post-copy: from the restore returning to the last page arriving from the source; a lazy memory load:
   * to the last page loaded from the target's images (either way the workload ran, faulting pages in).
   */
  pagesMs?: number;
  totalMs?: number;
}

export interface MigrationRecord {
  id: string;
  status: MigrationStatus;
  step: Step;
  request: MigrationRequest | PodMigrationRequest;
  /** A pod migration's own state (Kubernetes mode); absent for a container's. */
  pod?: PodMigrationState;
  /** imageId: where the target's runtime restores onto that exact image (podman, docker). */
  source: { node: string; runtime: RuntimeName; containerId: string; containerName: string; imageId?: string };
  /**
   * twinId (podman stop-and-copy): a stopped twin prepared on the target in preflight; the final dump is
   * taken in place and restored into it, and a rollback restores the source in place too.
   */
  target: { node: string; containerName: string; twinId?: string };
  strategy?: { requested: Strategy; used: Exclude<Strategy, 'auto'>; reason: string };
  /** How the target loads the memory on restore, and why; absent for post-copy (memory comes from the source). */
  memoryLoad?: { requested: MemoryLoad; used: Exclude<MemoryLoad, 'auto'>; reason: string };
  /**
   * Pre-copy: the target restored from its rounds merged into one image set as they arrived (how many
   * pages, how many of them left to load lazily), or why it restored from the rounds as they are.
   */
  mergedRounds?: MergeOutcome;
  /** The checkpoint id used on both nodes; fixed up front so a restarted controller can find it. */
  checkpointId: string;
  /** Pre-copy rounds, each a pre-dump on the source sent to the target while the container ran. */
  rounds: RoundFigures[];
  /** What a restore on the target is expected to cost: its recent median, else a prior (precopy.ts). */
  restoreEstimateMs?: number;
  /** Why the rounds ended (pre-copy only). */
  precopyStop?: string;
  /** Pre-copy fell back to stop-and-copy: the final dump took all of memory without the rounds (precopy.ts). */
  precopyFallback?: boolean;
  figures: MigrationFigures;
  error?: MigrationError;
  /** What rollback did to keep exactly one copy running, when it ran. */
  rollback?: { reason: string; outcome: string };
  createdAt: string;
  updatedAt: string;
  finishedAt?: string;
}

export interface MigrationEvent {
  seq: number;
  at: string;
  type: 'step' | 'round' | 'progress' | 'rollback' | 'finished';
  step?: Step;
  message: string;
  data?: Record<string, unknown>;
}

export const isFinished = (m: Pick<MigrationRecord, 'status'>) => m.status !== 'running';
