/**
 * A CheckpointPolicy: which containers to protect, how often, how many checkpoints to keep. The same
 * document (apiVersion/kind/metadata/spec) is a YAML file in standalone mode and a custom resource in
 * Kubernetes mode, so a policy moves between the two unchanged.
 */
import type { RuntimeName } from '../../../agent/src/runtimes/types.js';

export const POLICY_API_VERSION = 'ferry.dev/v1alpha1';
export const POLICY_KIND = 'CheckpointPolicy';

export interface PolicySelector {
  /** Container names; `*` matches any run of characters. */
  names?: string[];
  /** All of these labels (podman/docker labels, runc bundle annotations) must match. */
  labels?: Record<string, string>;
  /** Only containers on these nodes; all registered nodes when absent. */
  nodes?: string[];
  runtime?: RuntimeName;
  /** Kubernetes mode: the pods' namespace. */
  namespace?: string;
}

export type Schedule =
  | { every: string }
  /** Five cron fields, in UTC. */
  | { cron: string }
  | { adaptive: { mtbf: string; min: string; max: string; formula?: 'young' | 'daly' } };

export interface Retention {
  keepLast?: number;
  maxAge?: string;
  maxBytes?: string | number;
}

export interface PolicySpec {
  selector: PolicySelector;
  schedule: Schedule;
  /**
   * Incremental chains: each checkpoint dumps with the container's previous one as parent (memory that
   * did not change is not written again), a checkpoint without parent every `fullEvery`; needs runc on a
   * node whose kernel tracks dirty memory, else every checkpoint is full and the status says why.
   */
  incremental?: { fullEvery: number };
  retention?: Retention;
  /** One consistent cut of all selected containers (freeze all, dump all, resume all). */
  coordinated?: boolean;
  /** Keep the container running after each checkpoint (default). */
  leaveRunning?: boolean;
  /** Copies of each checkpoint on other nodes (chosen by capability and load), so that a lost node's workloads can be restored elsewhere. */
  storage?: { replicas?: number };
  /** A node silent for `after` has this policy's containers restored from their latest checkpoint on a node holding a copy. */
  recovery?: { after: string };
  suspend?: boolean;
}

export interface PolicyDocument {
  apiVersion?: typeof POLICY_API_VERSION;
  kind?: typeof POLICY_KIND;
  metadata: { name: string };
  spec: PolicySpec;
}

export interface PolicyError {
  code: string;
  message: string;
  at: string;
  /** CRIU's own lines, where CRIU failed. */
  criuLog?: string[];
}

export interface PolicyStatus {
  phase: 'Active' | 'Suspended' | 'Failing';
  lastRunAt?: string;
  nextRunAt?: string;
  lastSuccessAt?: string;
  lastError?: PolicyError;
  consecutiveFailures: number;
  /** The interval in force and why: fixed, or the adaptive formula with its inputs. */
  interval: { ms: number; reason: string; costMs?: number; mtbfMs?: number };
  /** Measured on the last successful run: CRIU's frozen time and the whole checkpoint call, in ms (max over containers). */
  cost?: { frozenMs: number; totalMs: number };
  /** Containers the last run selected. */
  containers: number;
  /** Checkpoints kept now. */
  checkpoints: number;
  incremental: string;
}

export interface Policy extends PolicyDocument {
  apiVersion: typeof POLICY_API_VERSION;
  kind: typeof POLICY_KIND;
  metadata: { name: string; generation: number; createdAt: string; updatedAt: string };
  status: PolicyStatus;
}

/** One checkpoint a policy took, wherever it is kept. */
export interface PolicyCheckpoint {
  id: string;
  policy: string;
  runId: string;
  node: string;
  runtime: RuntimeName;
  containerId: string;
  containerName: string;
  parent?: string;
  /** A chain head's memory-only base (a pre-dump): kept as a parent, never restored or counted on its own. */
  memoryOnly?: boolean;
  /** Nodes that hold a verified copy besides `node`. */
  copies?: string[];
  /** Why this checkpoint has no parent although the policy asked for incremental chains; `unsupported` when it never can have one there. */
  fullBecause?: { reason: string; unsupported: boolean };
  /** pending: asked for and journaled; complete: on the node, verified by the agent's store. */
  state: 'pending' | 'complete' | 'failed' | 'deleted';
  createdAt: string;
  bytes?: number;
  /** CRIU's pages written: with a parent, only what changed since it. */
  pagesWritten?: number;
  frozenMs?: number;
  totalMs?: number;
  error?: PolicyError;
}

export interface PolicyRun {
  id: string;
  policy: string;
  status: 'running' | 'succeeded' | 'partial' | 'failed' | 'interrupted' | 'skipped';
  startedAt: string;
  /** When a scheduled run was due, and how late it started (the scheduler's lag). */
  dueAt?: string;
  lagMs?: number;
  finishedAt?: string;
  /** Why it ran: on schedule, asked for, or a run lost to a controller restart. */
  trigger: 'schedule' | 'manual' | 'recovery';
  checkpoints: string[];
  deleted: string[];
  /** Coordinated runs: how long the group was held frozen, from the first freeze to the last thaw. */
  groupFrozenMs?: number;
  message?: string;
  error?: PolicyError;
}

/**
 * A container restored elsewhere because its node was lost. The lost node's copy is fenced (stopped) when
 * that node answers again, so that exactly one copy runs.
 */
export interface PolicyRecovery {
  id: string;
  policy: string;
  runtime: RuntimeName;
  containerName: string;
  /** The container as it ran on the lost node, to be stopped there. */
  lostNode: string;
  lostContainerId: string;
  checkpoint: string;
  checkpointTakenAt: string;
  targetNode?: string;
  status: 'restored' | 'failed';
  at: string;
  /** Work lost: the time between the checkpoint and the moment the node was declared lost. */
  lostWorkMs: number;
  /** none: nothing to stop (the recovery failed, so the lost node's copy is the only one). */
  fence: 'pending' | 'done' | 'none';
  fencedAt?: string;
  error?: PolicyError;
}
