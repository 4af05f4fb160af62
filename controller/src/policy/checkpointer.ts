/**
 * What one policy run does to containers: journal a checkpoint per container, ask the agents, copy the
 * results to other nodes, and delete what retention lets go. Records are written in batches (one
 * transaction for the journal before any agent is asked, one after): a run of ten containers costs a
 * few commits, not thirty, which is what lets one controller drive thousands of policies.
 */
import { randomBytes } from 'node:crypto';
import { isFerryError } from '../../../agent/src/errors.js';
import type { ContainerInfo } from '../../../agent/src/runtimes/types.js';
import type { NodeRegistry } from '../nodes.js';
import { type PolicyRepo, policyContainerKey } from '../store/policies.js';
import type { CompiledPolicy } from './compile.js';
import type { PolicyPlacement } from './recovery.js';
import { checkpointsToDelete } from './retention.js';
import { asPolicyError, policyError } from './errors.js';
import type { PolicyCheckpoint, PolicyError, PolicyRun } from './types.js';

export interface Target {
  node: string;
  container: ContainerInfo;
}

export interface CheckpointResult {
  checkpoint?: PolicyCheckpoint;
  error?: PolicyError;
}

export class PolicyCheckpointer {
  /** Containers being checkpointed now, by policyContainerKey: one checkpoint at a time per container. */
  private readonly busy = new Set<string>();

  constructor(
    private readonly repo: PolicyRepo,
    private readonly nodes: NodeRegistry,
    private readonly placement: PolicyPlacement,
    private readonly holdTtlMs: number,
    private readonly now: () => number,
  ) {}

  /** Checkpoints every target (as one consistent cut when the policy is coordinated) and journals the outcome. */
  async checkpointAll(
    policy: string,
    compiled: CompiledPolicy,
    coordinated: boolean,
    run: PolicyRun,
    targets: Target[],
  ): Promise<CheckpointResult[]> {
    const skipped: CheckpointResult[] = [];
    const planned: PolicyCheckpoint[] = [];
    for (const t of targets) {
      const c = this.plan(policy, run, t, compiled.fullEvery);
      if (this.busy.has(policyContainerKey(c))) {
        skipped.push({
          error: policyError('conflict', `${c.containerName} on ${c.node} is still being checkpointed by an earlier run; skipped`),
        });
      } else {
        planned.push(c);
        this.busy.add(policyContainerKey(c));
      }
    }
    this.repo.saveCheckpoints(planned);
    run.checkpoints.push(...planned.map((c) => c.id));
    const bases: PolicyCheckpoint[] = [];
    try {
      const taken = coordinated
        ? await this.takeGroup(compiled, run, planned, bases)
        : await Promise.all(planned.map((c) => this.take(compiled, c, compiled.replicas, bases)));
      return [...skipped, ...taken];
    } finally {
      this.repo.saveCheckpoints([...bases, ...planned]);
      for (const c of planned) this.busy.delete(policyContainerKey(c));
    }
  }

  private plan(policy: string, run: PolicyRun, t: Target, fullEvery: number | undefined): PolicyCheckpoint {
    const chain = fullEvery === undefined ? undefined : this.chainFor(policy, t, fullEvery);
    return {
      ...chain,
      id: checkpointId(policy, this.now()),
      policy,
      runId: run.id,
      node: t.node,
      runtime: t.container.runtime,
      containerId: t.container.id,
      containerName: t.container.name,
      state: 'pending',
      createdAt: new Date(this.now()).toISOString(),
    };
  }

  /**
   * The parent for this container's next checkpoint: its latest on the same node, unless the chain is
   * already `fullEvery` long or the node cannot dump increments (then `fullBecause` says why).
   */
  private chainFor(policy: string, t: Target, fullEvery: number): Pick<PolicyCheckpoint, 'parent' | 'fullBecause'> {
    const never = (reason: string) => ({ fullBecause: { reason, unsupported: true } });
    if (t.container.runtime !== 'runc') return never(`incremental chains need runc; ${t.container.name} runs under ${t.container.runtime}`);
    const caps = this.nodes.list().find((n) => n.name === t.node)?.capabilities;
    if (!caps?.criu.memDirtyTrack) return never(`node ${t.node}'s kernel does not track dirty memory (soft-dirty)`);
    const mine = this.repo
      .checkpoints(policy, ['complete'], policyContainerKey({ runtime: t.container.runtime, containerName: t.container.name }))
      .filter((c) => c.node === t.node && c.containerId === t.container.id && !c.memoryOnly);
    const latest = mine.at(-1);
    if (!latest) return { fullBecause: { reason: 'first of its chain', unsupported: false } };
    // Only restorable checkpoints count: a chain head's memory-only base is not one of the fullEvery.
    let depth = 1;
    for (let cur = latest; cur.parent; ) {
      const up = mine.find((c) => c.id === cur.parent);
      if (!up) break;
      depth++;
      cur = up;
    }
    return depth >= fullEvery
      ? { fullBecause: { reason: `a full checkpoint every ${fullEvery}`, unsupported: false } }
      : { parent: latest.id };
  }

  /**
   * Asks the agent; the record `c` is updated in place and saved by the caller. A chain head on a node
   * that tracks memory first gets a memory-only base (a pre-dump, added to `bases`): CRIU can build on a
   * checkpoint only if it was taken with memory tracking, and runc turns tracking on only for a pre-dump
   * or a dump with a parent.
   */
  private async take(
    compiled: CompiledPolicy,
    c: PolicyCheckpoint,
    replicas: number,
    bases: PolicyCheckpoint[],
  ): Promise<CheckpointResult> {
    const t0 = performance.now();
    let base: PolicyCheckpoint | undefined;
    try {
      if (c.fullBecause && !c.fullBecause.unsupported) {
        base = { ...c, id: `${c.id}-base`, memoryOnly: true, state: 'pending' };
        delete base.fullBecause;
        bases.push(base);
        const b = await this.nodes.client(c.node).checkpoint({ runtime: c.runtime, container: c.containerId, preDump: true, id: base.id });
        Object.assign(base, {
          state: 'complete',
          createdAt: b.createdAt,
          bytes: b.totalBytes,
          ...(b.stats ? { pagesWritten: b.stats.pagesWritten } : {}),
        });
        c.parent = base.id;
      }
      const m = await this.nodes.client(c.node).checkpoint({
        runtime: c.runtime,
        container: c.containerId,
        leaveRunning: compiled.leaveRunning,
        id: c.id,
        ...(c.parent ? { parent: c.parent } : {}),
      });
      Object.assign(c, {
        state: 'complete',
        createdAt: m.createdAt,
        bytes: m.totalBytes,
        totalMs: Math.round(performance.now() - t0),
        ...(m.stats ? { frozenMs: m.stats.frozenTimeMs, pagesWritten: m.stats.pagesWritten } : {}),
      });
      const copyError = await this.replicate(c, replicas);
      // The base travels with its child (parents go first), so it is held where the child is.
      if (base && c.copies) base.copies = c.copies;
      return { checkpoint: c, ...(copyError ? { error: copyError } : {}) };
    } catch (err) {
      c.state = 'failed';
      c.error = asPolicyError(err, `checkpointing ${c.containerName} on ${c.node}`);
      // A base without its checkpoint is no use to anyone.
      if (base?.state === 'complete') Object.assign(base, (await this.deleteEverywhere(base)).record);
      else if (base) base.state = 'failed';
      return { checkpoint: c, error: c.error };
    }
  }

  /**
   * A coordinated run: every selected container is frozen (one hold per node), checkpointed while the
   * whole group stays frozen, then thawed together, so the checkpoints form one consistent cut. A cut
   * missing one container is no cut: its checkpoints are deleted and the run fails. Copies to other nodes
   * are made after the thaw, outside the workload's frozen time.
   */
  private async takeGroup(
    compiled: CompiledPolicy,
    run: PolicyRun,
    planned: PolicyCheckpoint[],
    bases: PolicyCheckpoint[],
  ): Promise<CheckpointResult[]> {
    if (!planned.length) return [];
    const byNode = new Map<string, PolicyCheckpoint[]>();
    for (const c of planned) byNode.set(c.node, [...(byNode.get(c.node) ?? []), c]);
    const holds: { node: string; id: string }[] = [];
    const t0 = performance.now();
    let results: CheckpointResult[] = [];
    try {
      const held = await Promise.allSettled(
        [...byNode].map(async ([node, cs]) => {
          const h = await this.nodes
            .client(node)
            .hold({ containers: cs.map((c) => ({ runtime: c.runtime, container: c.containerId })), ttlMs: this.holdTtlMs });
          holds.push({ node, id: h.id });
        }),
      );
      const holdFailure = held.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (holdFailure) {
        const error = asPolicyError(holdFailure.reason, 'freezing the group');
        for (const c of planned) Object.assign(c, { state: 'failed', error });
        return planned.map(() => ({ error }));
      }
      results = await Promise.all(planned.map((c) => this.take(compiled, c, 0, bases)));
    } finally {
      await Promise.allSettled(holds.map((h) => this.nodes.client(h.node).releaseHold(h.id)));
      run.groupFrozenMs = Math.round(performance.now() - t0);
    }
    const taken = planned.filter((c) => c.state === 'complete');
    if (taken.length < planned.length) {
      const first = results.find((r) => r.error)?.error;
      const error = policyError(
        first?.code ?? 'internal',
        `the group's cut is incomplete, so none of it was kept: ${first?.message ?? 'unknown'}`,
      );
      for (const c of taken) Object.assign(c, (await this.deleteEverywhere(c)).record);
      return planned.map(() => ({ error }));
    }
    for (const r of results) {
      const copyError = await this.replicate(r.checkpoint as PolicyCheckpoint, compiled.replicas);
      if (copyError) r.error = copyError;
    }
    return results;
  }

  /** Copies a fresh checkpoint to other nodes; the checkpoint counts, a missing copy is this run's error. */
  private async replicate(c: PolicyCheckpoint, replicas: number): Promise<PolicyError | undefined> {
    const targets = this.placement.replicaNodes(c.node, c.runtime, replicas);
    const copies: string[] = [];
    let error: PolicyError | undefined;
    for (const target of targets) {
      try {
        await this.nodes.client(c.node).send(c.id, this.nodes.peer(target));
        copies.push(target);
      } catch (err) {
        error = asPolicyError(err, `copying ${c.id} to ${target}`);
      }
    }
    if (copies.length) c.copies = copies;
    if (!error && copies.length < replicas) {
      error = policyError(
        'incompatible_nodes',
        `${c.id} has ${copies.length} of ${replicas} copies: not enough healthy nodes can restore it`,
      );
    }
    return error;
  }

  /** Deletes, for each container key, the checkpoints retention lets go; returns the ids deleted. */
  async applyRetention(policy: string, compiled: CompiledPolicy, keys: Iterable<string>, failures: PolicyError[]): Promise<string[]> {
    const doomed: PolicyCheckpoint[] = [];
    for (const key of keys) {
      const kept = this.repo.checkpoints(policy, ['complete'], key);
      const ids = checkpointsToDelete(
        kept.map((c) => ({
          id: c.id,
          createdAt: c.createdAt,
          bytes: c.bytes ?? 0,
          ...(c.parent ? { parent: c.parent } : {}),
          ...(c.memoryOnly ? { memoryOnly: true } : {}),
        })),
        compiled.retention,
        this.now(),
      );
      for (const id of ids) doomed.push(kept.find((k) => k.id === id) as PolicyCheckpoint);
    }
    return this.deleteAll(doomed, failures);
  }

  /** Deletes checkpoints in the order given (children first), recording the outcome in one transaction. */
  async deleteAll(checkpoints: PolicyCheckpoint[], failures: PolicyError[]): Promise<string[]> {
    const records: PolicyCheckpoint[] = [];
    const deleted: string[] = [];
    for (const c of checkpoints) {
      const { record, error } = await this.deleteEverywhere(c);
      records.push(record);
      if (error) failures.push(error);
      else deleted.push(c.id);
    }
    this.repo.saveCheckpoints(records);
    return deleted;
  }

  /** Deletes every copy; already gone counts as deleted. Copies that could not be deleted stay on record, to retry. */
  private async deleteEverywhere(c: PolicyCheckpoint): Promise<{ record: PolicyCheckpoint; error?: PolicyError }> {
    const left: string[] = [];
    let error: PolicyError | undefined;
    for (const node of [c.node, ...(c.copies ?? [])]) {
      try {
        await this.nodes.client(node).deleteCheckpoint(c.id);
      } catch (err) {
        if (isFerryError(err) && err.code === 'checkpoint_not_found') continue;
        left.push(node);
        error = asPolicyError(err, `deleting ${c.id} on ${node} (retried next run)`);
      }
    }
    const [node, ...copies] = left;
    return { record: node ? { ...c, node, copies } : { ...c, state: 'deleted' }, ...(error ? { error } : {}) };
  }
}

/** Unique per checkpoint and valid as an agent checkpoint id (lowercase, at most 64 characters). */
/** Checkpoint ids allow no dots: a CheckpointPolicy object's `<namespace>.<name>` becomes `<namespace>-<name>`. */
export const checkpointId = (policy: string, now: number) =>
  `${policy.replaceAll('.', '-').slice(0, 40)}-${now.toString(36)}-${randomBytes(2).toString('hex')}`;
