/**
 * Runs checkpoint policies: each policy fires on its interval (fixed, or adaptive from the measured
 * checkpoint cost and the mean time between failures), checkpoints every running container it selects on
 * the registered nodes, never two at once for one container, then applies retention. Before a run acts,
 * the run and the time of the next one are written together, and each checkpoint is journaled before its
 * agent is asked; so a controller restarted at any point neither fires a run twice nor loses one, and finds
 * out which of the checkpoints it asked for exist.
 */
import { randomBytes } from 'node:crypto';
import { FerryError, isFerryError } from '../../../agent/src/errors.js';
import type { ContainerInfo } from '../../../agent/src/runtimes/types.js';
import type { NodeRegistry } from '../nodes.js';
import { type PolicyRepo, policyContainerKey } from '../store/policies.js';
import { type CompiledPolicy, compilePolicy, selects } from './compile.js';
import { adaptiveInterval, formatDuration } from './interval.js';
import type { PolicyPlacement } from './recovery.js';
import { checkpointsToDelete } from './retention.js';
import {
  POLICY_API_VERSION,
  POLICY_KIND,
  type Policy,
  type PolicyCheckpoint,
  type PolicyDocument,
  type PolicyError,
  type PolicyRecovery,
  type PolicyRun,
  type PolicyStatus,
} from './types.js';

export interface SchedulerOptions {
  /** Random delay added to each next run, as a fraction of the interval (capped by maxJitterMs): spreads load. */
  jitterFraction?: number;
  maxJitterMs?: number;
  /** Longest wait after repeated failures; the interval doubles per failure up to this. */
  maxBackoffMs?: number;
  /** How long a coordinated run's freeze may last before the agents thaw by themselves (a controller died mid-cut). */
  holdTtlMs?: number;
  now?: () => number;
}

interface Target {
  node: string;
  container: ContainerInfo;
}

interface CheckpointResult {
  checkpoint?: PolicyCheckpoint;
  error?: PolicyError;
}

const LONGEST_SLEEP_MS = 60_000;

export class PolicyScheduler {
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private halted = false;
  private starting: Promise<void> = Promise.resolve();
  private readonly inFlight = new Map<string, Promise<PolicyRun>>();
  /** Containers being checkpointed now, by policyContainerKey: one checkpoint at a time per container. */
  private readonly busy = new Set<string>();
  private readonly jitterFraction: number;
  private readonly maxJitterMs: number;
  private readonly maxBackoffMs: number;
  private readonly holdTtlMs: number;
  private readonly now: () => number;

  constructor(
    private readonly repo: PolicyRepo,
    private readonly nodes: NodeRegistry,
    private readonly placement: PolicyPlacement,
    opts: SchedulerOptions = {},
  ) {
    this.jitterFraction = opts.jitterFraction ?? 0.1;
    this.maxJitterMs = opts.maxJitterMs ?? 5_000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 15 * 60_000;
    this.holdTtlMs = opts.holdTtlMs ?? 120_000;
    this.now = opts.now ?? Date.now;
  }

  /** Creates or replaces a policy; the schedule restarts from now when the spec changed. */
  apply(doc: PolicyDocument): { policy: Policy; created: boolean } {
    const compiled = compilePolicy(doc.spec);
    const existing = this.repo.get(doc.metadata.name);
    const at = new Date(this.now()).toISOString();
    const changed = !existing || JSON.stringify(existing.spec) !== JSON.stringify(doc.spec);
    const policy: Policy = {
      apiVersion: POLICY_API_VERSION,
      kind: POLICY_KIND,
      metadata: {
        name: doc.metadata.name,
        generation: (existing?.metadata.generation ?? 0) + (changed ? 1 : 0),
        createdAt: existing?.metadata.createdAt ?? at,
        updatedAt: changed ? at : (existing?.metadata.updatedAt ?? at),
      },
      spec: doc.spec,
      status: existing?.status ?? initialStatus(),
    };
    const interval = this.intervalFor(policy, compiled);
    policy.status.interval = interval;
    policy.status.phase = compiled.suspend ? 'Suspended' : policy.status.consecutiveFailures ? 'Failing' : 'Active';
    policy.status.incremental = incrementalNote(policy);
    // A changed policy runs once now (its first checkpoint protects at once), then on its interval.
    const next = compiled.suspend ? undefined : changed ? at : (this.repo.nextRunAt(policy.metadata.name) ?? at);
    if (next) policy.status.nextRunAt = next;
    else delete policy.status.nextRunAt;
    this.repo.save(policy, next);
    this.wake();
    return { policy, created: !existing };
  }

  get(name: string): Policy {
    const p = this.repo.get(name);
    if (!p) {
      throw new FerryError('not_found', `no policy named '${name}'`, {
        hint: 'list policies with `ferry policy ls`',
        details: { field: 'name' },
      });
    }
    return p;
  }

  list(): Policy[] {
    return this.repo.list();
  }

  runs(name: string): PolicyRun[] {
    this.get(name);
    return this.repo.runs(name);
  }

  checkpoints(name: string): PolicyCheckpoint[] {
    this.get(name);
    return this.repo.checkpoints(name, ['pending', 'complete']);
  }

  recoveries(name: string): PolicyRecovery[] {
    this.get(name);
    return this.repo.recoveries(name);
  }

  /** Deletes the policy and, children first, the checkpoints it kept; those an agent could not delete are reported. */
  async remove(name: string): Promise<{ deleted: string[]; left: { id: string; node: string; error: string }[] }> {
    this.get(name);
    this.repo.remove(name);
    await this.inFlight.get(name)?.catch(() => undefined);
    const kept = this.repo.checkpoints(name, ['complete']).reverse();
    const deleted: string[] = [];
    const left: { id: string; node: string; error: string }[] = [];
    for (const c of kept) {
      const err = await this.deleteCheckpoint(c);
      if (err) left.push({ id: c.id, node: c.node, error: err.message });
      else deleted.push(c.id);
    }
    return { deleted, left };
  }

  /** Runs the policy now, outside its schedule (which it does not move), and returns the finished run. */
  async runNow(name: string): Promise<PolicyRun> {
    const running = this.inFlight.get(name);
    if (running) await running.catch(() => undefined);
    return this.launch(this.get(name), 'manual');
  }

  /**
   * Settles what a previous controller left unfinished, then starts firing policies. In the background:
   * asking agents about journaled checkpoints must not hold up the API when a node is down.
   */
  start(): void {
    this.starting = this.recover()
      .catch(() => undefined)
      .then(() => {
        if (this.halted) return;
        this.stopped = false;
        this.wake();
      });
  }

  async stop(): Promise<void> {
    this.halted = true;
    await this.starting;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.allSettled(this.inFlight.values());
  }

  private async recover(): Promise<void> {
    for (const c of this.repo.pendingCheckpoints()) {
      let found: Awaited<ReturnType<ReturnType<NodeRegistry['client']>['getCheckpoint']>> | null | undefined;
      try {
        found = await this.nodes.client(c.node).getCheckpoint(c.id);
      } catch (err) {
        found = isFerryError(err) && err.code === 'checkpoint_not_found' ? null : undefined;
      }
      if (found === undefined) continue; // node unreachable: asked again at the next start
      if (found) this.repo.saveCheckpoint({ ...c, state: 'complete', bytes: found.totalBytes, createdAt: found.createdAt });
      else
        this.repo.saveCheckpoint({
          ...c,
          state: 'failed',
          error: policyError('interrupted', 'the controller stopped before the agent finished it'),
        });
    }
    for (const run of this.repo.unfinishedRuns()) {
      this.repo.saveRun({
        ...run,
        status: 'interrupted',
        finishedAt: new Date(this.now()).toISOString(),
        message: 'the controller stopped during this run',
      });
      const p = this.repo.get(run.policy);
      // The interrupted run's checkpoints may be missing: the next one is due now, not an interval later.
      if (p && !p.spec.suspend)
        this.repo.save(
          { ...p, status: { ...p.status, nextRunAt: new Date(this.now()).toISOString() } },
          new Date(this.now()).toISOString(),
        );
    }
  }

  /** Sleeps until the earliest due policy (at most a minute, so a clock change is noticed). */
  private wake(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const now = this.now();
    let earliest = now + LONGEST_SLEEP_MS;
    for (const p of this.repo.list()) {
      if (p.spec.suspend || this.inFlight.has(p.metadata.name)) continue;
      const due = this.repo.nextRunAt(p.metadata.name);
      if (!due) continue;
      const at = Date.parse(due);
      if (at <= now) {
        void this.launch(p, 'schedule').catch(() => undefined);
        continue;
      }
      earliest = Math.min(earliest, at);
    }
    this.timer = setTimeout(() => this.wake(), Math.max(0, earliest - now));
    this.timer.unref();
  }

  private launch(p: Policy, trigger: PolicyRun['trigger']): Promise<PolicyRun> {
    const name = p.metadata.name;
    const run = this.run(p, trigger).finally(() => {
      this.inFlight.delete(name);
      this.wake();
    });
    this.inFlight.set(name, run);
    return run;
  }

  private async run(p: Policy, trigger: PolicyRun['trigger']): Promise<PolicyRun> {
    const compiled = compilePolicy(p.spec);
    const name = p.metadata.name;
    const startedAt = new Date(this.now()).toISOString();
    const run: PolicyRun = { id: runId(this.now()), policy: name, status: 'running', startedAt, trigger, checkpoints: [], deleted: [] };
    const interval = this.intervalFor(p, compiled);
    // A manual run leaves the schedule where it was.
    const next =
      trigger === 'manual' ? this.repo.nextRunAt(name) : new Date(this.now() + interval.ms + this.jitter(interval.ms)).toISOString();
    p.status = { ...p.status, lastRunAt: startedAt, interval, ...(next ? { nextRunAt: next } : {}) };
    this.repo.startRun(run, p, next);

    const failures: PolicyError[] = [];
    let targets: Target[] = [];
    try {
      targets = await this.targets(p, failures);
      const results = p.spec.coordinated
        ? await this.checkpointGroup(p, compiled, run, targets)
        : await Promise.all(targets.map((t) => this.checkpointOne(p, compiled, run, t, compiled.replicas)));
      for (const r of results) if (r.error) failures.push(r.error);
      const touched = new Set(
        results.filter((r) => r.checkpoint?.state === 'complete').map((r) => policyContainerKey(r.checkpoint as PolicyCheckpoint)),
      );
      for (const key of touched) run.deleted.push(...(await this.applyRetention(name, compiled, key, failures)));
      const done = results.filter((r) => r.checkpoint?.state === 'complete').map((r) => r.checkpoint as PolicyCheckpoint);
      run.status = failures.length === 0 ? 'succeeded' : done.length ? 'partial' : 'failed';
      if (!targets.length) run.message = 'no running container matches the selector';
      this.finish(name, run, done, targets.length, failures, interval.ms);
    } catch (err) {
      failures.push(asPolicyError(err));
      run.status = 'failed';
      this.finish(name, run, [], targets.length, failures, interval.ms);
    }
    return run;
  }

  /** Writes the run's outcome into the run and the policy's status (re-read: it may have been re-applied meanwhile). */
  private finish(
    name: string,
    run: PolicyRun,
    done: PolicyCheckpoint[],
    selected: number,
    failures: PolicyError[],
    intervalMs: number,
  ): void {
    run.finishedAt = new Date(this.now()).toISOString();
    if (failures.length) {
      run.error = failures[0] as PolicyError;
      if (failures.length > 1) run.message = [run.message, `${failures.length} problems; first shown`].filter(Boolean).join('; ');
    }
    this.repo.saveRun(run);
    const p = this.repo.get(name);
    if (!p) return; // deleted while it ran
    const s: PolicyStatus = p.status;
    s.containers = selected;
    s.checkpoints = this.repo.checkpoints(name, ['complete']).length;
    if (run.status === 'failed') {
      s.consecutiveFailures += 1;
      s.lastError = run.error as PolicyError;
      // Backing off: the next try waits the interval doubled per consecutive failure, up to maxBackoffMs.
      const wait = Math.min(intervalMs * 2 ** (s.consecutiveFailures - 1), Math.max(intervalMs, this.maxBackoffMs));
      const next = new Date(this.now() + wait).toISOString();
      if (run.trigger !== 'manual' && !p.spec.suspend) s.nextRunAt = next;
    } else {
      s.consecutiveFailures = 0;
      s.lastSuccessAt = run.finishedAt;
      if (run.error) s.lastError = run.error;
      const measured = done.filter((c) => c.totalMs !== undefined);
      if (measured.length) {
        s.cost = {
          frozenMs: Math.max(...measured.map((c) => c.frozenMs ?? 0)),
          totalMs: Math.max(...measured.map((c) => c.totalMs ?? 0)),
        };
      }
    }
    s.phase = p.spec.suspend ? 'Suspended' : s.consecutiveFailures ? 'Failing' : 'Active';
    this.repo.save(p, p.spec.suspend ? undefined : s.nextRunAt);
  }

  /** The running containers the policy selects, node by node; a node that cannot be asked is a failure of this run. */
  private async targets(p: Policy, failures: PolicyError[]): Promise<Target[]> {
    const sel = p.spec.selector;
    const candidates = this.nodes.list().filter((n) => !sel.nodes || sel.nodes.includes(n.name));
    // A container restored elsewhere after its node was lost is not protected where it is about to be stopped.
    const fenced = new Set(this.repo.pendingFences().map((r) => `${r.lostNode}/${r.lostContainerId}`));
    const lists = await Promise.all(
      candidates.map(async (n) => {
        if (!n.healthy) {
          failures.push(
            policyError('node_unreachable', `node ${n.name} is not answering health checks; its containers were not checkpointed`),
          );
          return [];
        }
        try {
          const containers = await this.nodes.client(n.name).containers(sel.runtime);
          return containers
            .filter((c) => selects(sel, n.name, c) && !fenced.has(`${n.name}/${c.id}`))
            .map((container) => ({ node: n.name, container }));
        } catch (err) {
          failures.push(asPolicyError(err, `listing containers on ${n.name}`));
          return [];
        }
      }),
    );
    return lists.flat();
  }

  /**
   * A coordinated run: every selected container is frozen (one hold per node), checkpointed while the
   * whole group stays frozen, then thawed together, so the checkpoints form one consistent cut. A cut
   * missing one container is no cut: its checkpoints are deleted and the run fails. Copies to other nodes
   * are made after the thaw, outside the workload's frozen time.
   */
  private async checkpointGroup(p: Policy, compiled: CompiledPolicy, run: PolicyRun, targets: Target[]): Promise<CheckpointResult[]> {
    if (!targets.length) return [];
    const byNode = new Map<string, Target[]>();
    for (const t of targets) byNode.set(t.node, [...(byNode.get(t.node) ?? []), t]);
    const holds: { node: string; id: string }[] = [];
    const t0 = performance.now();
    const held = await Promise.allSettled(
      [...byNode].map(async ([node, ts]) => {
        const h = await this.nodes.client(node).hold({
          containers: ts.map((t) => ({ runtime: t.container.runtime, container: t.container.id })),
          ttlMs: this.holdTtlMs,
        });
        holds.push({ node, id: h.id });
      }),
    );
    const holdFailure = held.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    let results: CheckpointResult[] = [];
    try {
      if (holdFailure) {
        const error = asPolicyError(holdFailure.reason, 'freezing the group');
        return targets.map(() => ({ error }));
      }
      results = await Promise.all(targets.map((t) => this.checkpointOne(p, compiled, run, t, 0)));
    } finally {
      await Promise.allSettled(holds.map((h) => this.nodes.client(h.node).releaseHold(h.id)));
      run.groupFrozenMs = Math.round(performance.now() - t0);
    }
    const taken = results.filter((r) => r.checkpoint?.state === 'complete').map((r) => r.checkpoint as PolicyCheckpoint);
    if (taken.length < targets.length) {
      for (const c of taken) await this.deleteCheckpoint(c);
      const first = results.find((r) => r.error)?.error;
      const error = policyError(
        first?.code ?? 'internal',
        `the group's cut is incomplete, so none of it was kept: ${first?.message ?? 'unknown'}`,
      );
      return targets.map(() => ({ error }));
    }
    for (const r of results) {
      const copyError = await this.replicate(r.checkpoint as PolicyCheckpoint, compiled.replicas);
      if (copyError) r.error = copyError;
      this.repo.saveCheckpoint(r.checkpoint as PolicyCheckpoint);
    }
    return results;
  }

  private async checkpointOne(p: Policy, compiled: CompiledPolicy, run: PolicyRun, t: Target, replicas: number): Promise<CheckpointResult> {
    const c: PolicyCheckpoint = {
      id: checkpointId(p.metadata.name, this.now()),
      policy: p.metadata.name,
      runId: run.id,
      node: t.node,
      runtime: t.container.runtime,
      containerId: t.container.id,
      containerName: t.container.name,
      state: 'pending',
      createdAt: new Date(this.now()).toISOString(),
    };
    const key = policyContainerKey(c);
    if (this.busy.has(key)) {
      return { error: policyError('conflict', `${c.containerName} on ${c.node} is still being checkpointed by an earlier run; skipped`) };
    }
    this.busy.add(key);
    this.repo.saveCheckpoint(c);
    run.checkpoints.push(c.id);
    const t0 = performance.now();
    try {
      const m = await this.nodes
        .client(t.node)
        .checkpoint({ runtime: c.runtime, container: c.containerId, leaveRunning: compiled.leaveRunning, id: c.id });
      Object.assign(c, {
        state: 'complete',
        createdAt: m.createdAt,
        bytes: m.totalBytes,
        totalMs: Math.round(performance.now() - t0),
        ...(m.stats ? { frozenMs: m.stats.frozenTimeMs } : {}),
      });
      const copyError = await this.replicate(c, replicas);
      return { checkpoint: c, ...(copyError ? { error: copyError } : {}) };
    } catch (err) {
      c.state = 'failed';
      c.error = asPolicyError(err, `checkpointing ${c.containerName} on ${c.node}`);
      return { checkpoint: c, error: c.error };
    } finally {
      this.repo.saveCheckpoint(c);
      this.busy.delete(key);
    }
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

  private async applyRetention(policy: string, compiled: CompiledPolicy, key: string, failures: PolicyError[]): Promise<string[]> {
    const kept = this.repo.checkpoints(policy, ['complete'], key);
    const doomed = checkpointsToDelete(
      kept.map((c) => ({ id: c.id, createdAt: c.createdAt, bytes: c.bytes ?? 0, ...(c.parent ? { parent: c.parent } : {}) })),
      compiled.retention,
      this.now(),
    );
    const deleted: string[] = [];
    for (const id of doomed) {
      const c = kept.find((k) => k.id === id) as PolicyCheckpoint;
      const err = await this.deleteCheckpoint(c);
      if (err) failures.push(err);
      else deleted.push(id);
    }
    return deleted;
  }

  /** Deletes every copy; already gone counts as deleted. Copies that could not be deleted stay on record, to retry. */
  private async deleteCheckpoint(c: PolicyCheckpoint): Promise<PolicyError | undefined> {
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
    this.repo.saveCheckpoint(node ? { ...c, node, copies } : { ...c, state: 'deleted' });
    return error;
  }

  private intervalFor(p: Policy, compiled: CompiledPolicy): PolicyStatus['interval'] {
    const s = compiled.schedule;
    if (s.kind === 'every') return { ms: s.everyMs, reason: `every ${formatDuration(s.everyMs)}, as the policy says` };
    const cost = p.status.cost;
    if (!cost)
      return { ms: s.minMs, reason: `adaptive: no checkpoint measured yet, so the shortest interval (${formatDuration(s.minMs)})` };
    // What a checkpoint costs the workload: its frozen time when it keeps running, the whole checkpoint when it stops.
    const costMs = Math.max(1, compiled.leaveRunning ? cost.frozenMs : cost.totalMs);
    const a = adaptiveInterval({ costMs, mtbfMs: s.mtbfMs, minMs: s.minMs, maxMs: s.maxMs, formula: s.formula });
    return { ms: Math.round(a.intervalMs), reason: a.reason, costMs, mtbfMs: s.mtbfMs };
  }

  private jitter(intervalMs: number): number {
    return Math.floor(Math.random() * Math.min(intervalMs * this.jitterFraction, this.maxJitterMs));
  }
}

function initialStatus(): PolicyStatus {
  return { phase: 'Active', consecutiveFailures: 0, interval: { ms: 0, reason: '' }, containers: 0, checkpoints: 0, incremental: 'off' };
}

function incrementalNote(p: Policy): string {
  if (!p.spec.incremental) return 'off: every checkpoint is full';
  return 'full checkpoints only: pre-dump chains for policies are not implemented yet';
}

function policyError(code: string, message: string): PolicyError {
  return { code, message, at: new Date().toISOString() };
}

function asPolicyError(err: unknown, doing?: string): PolicyError {
  const code = isFerryError(err) ? err.code : 'internal';
  const message = (err as Error).message ?? String(err);
  return policyError(code, doing ? `${doing}: ${message}` : message);
}

const runId = (now: number) => `r-${now.toString(36)}-${randomBytes(3).toString('hex')}`;

/** Unique per checkpoint and valid as an agent checkpoint id (lowercase, at most 64 characters). */
const checkpointId = (policy: string, now: number) => `${policy.slice(0, 40)}-${now.toString(36)}-${randomBytes(2).toString('hex')}`;
