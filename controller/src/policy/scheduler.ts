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
import type { ContainerInfo, RuntimeName } from '../../../agent/src/runtimes/types.js';
import type { NodeRegistry } from '../nodes.js';
import { type PolicyRepo, policyContainerKey } from '../store/policies.js';
import { type CompiledPolicy, compilePolicy, type PodLabelLookup, selects } from './compile.js';
import { adaptiveInterval, formatDuration } from './interval.js';
import { nextCronTime } from './cron.js';
import { PolicyCheckpointer, type Target } from './checkpointer.js';
import { asPolicyError, policyError } from './errors.js';
import type { PolicyEvents } from './events.js';
import type { PolicyPlacement } from './recovery.js';
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

const LONGEST_SLEEP_MS = 60_000;
const INVENTORY_TTL_MS = 1_000;

export class PolicyScheduler {
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  private wakeQueued = false;
  /** Container listings per node and runtime, shared by the runs that start within INVENTORY_TTL_MS. */
  private readonly inventory = new Map<string, { at: number; listing: Promise<ContainerInfo[]> }>();
  private halted = false;
  private starting: Promise<void> = Promise.resolve();
  private readonly inFlight = new Map<string, Promise<PolicyRun>>();
  /** Kubernetes mode: pod labels from the API server, for namespaced selectors (kube/pods.ts). */
  private podLabels: PodLabelLookup | undefined;
  private readonly jitterFraction: number;
  private readonly maxJitterMs: number;
  private readonly maxBackoffMs: number;
  private readonly checkpointer: PolicyCheckpointer;
  private readonly now: () => number;

  constructor(
    private readonly repo: PolicyRepo,
    private readonly nodes: NodeRegistry,
    placement: PolicyPlacement,
    readonly events: PolicyEvents,
    opts: SchedulerOptions = {},
  ) {
    this.jitterFraction = opts.jitterFraction ?? 0.1;
    this.maxJitterMs = opts.maxJitterMs ?? 5_000;
    this.maxBackoffMs = opts.maxBackoffMs ?? 15 * 60_000;
    this.now = opts.now ?? Date.now;
    this.checkpointer = new PolicyCheckpointer(repo, nodes, placement, opts.holdTtlMs ?? 120_000, this.now);
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
    // What the last run found (e.g. no dirty tracking on a node) stays until the incremental setting changes.
    if (JSON.stringify(existing?.spec.incremental) !== JSON.stringify(doc.spec.incremental) || !existing) {
      policy.status.incremental = incrementalNote(policy);
    }
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
    const deleted = await this.checkpointer.deleteAll(kept, []);
    const left = this.repo
      .checkpoints(name, ['complete'])
      .map((c) => ({ id: c.id, node: c.node, error: c.error?.message ?? 'not deleted' }));
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
  /** Starts (again, after a stop: a controller that becomes the leader once more). */
  /** Namespaced selectors' labels become their pods' labels, looked up here (Kubernetes mode); undefined: the containers' own. */
  usePodLabels(lookup: PodLabelLookup | undefined): void {
    this.podLabels = lookup;
  }

  start(): void {
    this.halted = false;
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

  /**
   * Asks for a look at the schedule soon. Calls in one tick (a thousand runs finishing, a file of policies
   * applied) share one look, which reads only names and due times.
   */
  private wake(): void {
    if (this.stopped || this.wakeQueued) return;
    this.wakeQueued = true;
    setImmediate(() => {
      this.wakeQueued = false;
      this.fireDue();
    });
  }

  /** Launches every due policy, then sleeps until the next (at most a minute, so a clock change is noticed). */
  private fireDue(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const now = this.now();
    let earliest = now + LONGEST_SLEEP_MS;
    for (const { name, nextRunAt } of this.repo.schedule()) {
      if (this.inFlight.has(name)) continue;
      const at = Date.parse(nextRunAt);
      if (at > now) {
        earliest = Math.min(earliest, at);
        break; // ordered by due time: the rest are later
      }
      const p = this.repo.get(name);
      if (p && !p.spec.suspend) void this.launch(p, 'schedule', nextRunAt).catch(() => undefined);
    }
    this.timer = setTimeout(() => this.fireDue(), Math.max(0, earliest - now));
    this.timer.unref();
  }

  private launch(p: Policy, trigger: PolicyRun['trigger'], dueAt?: string): Promise<PolicyRun> {
    const name = p.metadata.name;
    const run = this.run(p, trigger, dueAt).finally(() => {
      this.inFlight.delete(name);
      this.wake();
    });
    this.inFlight.set(name, run);
    return run;
  }

  private async run(p: Policy, trigger: PolicyRun['trigger'], dueAt?: string): Promise<PolicyRun> {
    const compiled = compilePolicy(p.spec);
    const name = p.metadata.name;
    const started = this.now();
    const startedAt = new Date(started).toISOString();
    const run: PolicyRun = {
      id: runId(started),
      policy: name,
      status: 'running',
      startedAt,
      ...(dueAt ? { dueAt, lagMs: started - Date.parse(dueAt) } : {}),
      trigger,
      checkpoints: [],
      deleted: [],
    };
    const interval = this.intervalFor(p, compiled);
    // A manual run leaves the schedule where it was.
    const next =
      trigger === 'manual' ? this.repo.nextRunAt(name) : new Date(this.now() + interval.ms + this.jitter(interval.ms)).toISOString();
    p.status = { ...p.status, lastRunAt: startedAt, interval, ...(next ? { nextRunAt: next } : {}) };
    this.repo.startRun(run, p, next);
    this.events.emit(name, 'run-started', `run ${run.id} started (${trigger})`, {
      run: run.id,
      ...(run.lagMs !== undefined ? { lagMs: run.lagMs } : {}),
    });

    const failures: PolicyError[] = [];
    let targets: Target[] = [];
    try {
      targets = await this.targets(p, failures);
      const results = await this.checkpointer.checkpointAll(name, compiled, Boolean(p.spec.coordinated), run, targets);
      for (const r of results) {
        if (r.error) failures.push(r.error);
        const c = r.checkpoint;
        if (c?.state === 'complete') {
          this.events.emit(name, 'checkpoint', `${c.id}: ${c.containerName} on ${[c.node, ...(c.copies ?? [])].join(', ')}`, { ...c });
        } else if (r.error) {
          this.events.emit(name, 'checkpoint-failed', r.error.message, { ...r.error });
        }
      }
      const touched = new Set(
        results.filter((r) => r.checkpoint?.state === 'complete').map((r) => policyContainerKey(r.checkpoint as PolicyCheckpoint)),
      );
      const deleted = await this.checkpointer.applyRetention(name, compiled, touched, failures);
      if (deleted.length) this.events.emit(name, 'deleted', `retention deleted ${deleted.join(', ')}`, { checkpoints: deleted });
      run.deleted.push(...deleted);
      const done = results.filter((r) => r.checkpoint?.state === 'complete').map((r) => r.checkpoint as PolicyCheckpoint);
      run.status = failures.length === 0 ? 'succeeded' : done.length ? 'partial' : 'failed';
      if (!targets.length) run.message = 'no running container matches the selector';
      this.finish(name, run, done, targets.length, failures, interval.ms);
    } catch (err) {
      failures.push(asPolicyError(err));
      run.status = 'failed';
      this.finish(name, run, [], targets.length, failures, interval.ms);
    }
    this.events.emit(name, 'run-finished', `run ${run.id} ${run.status}${run.error ? `: ${run.error.message}` : ''}`, { ...run });
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
    const p = this.repo.get(name);
    if (!p) {
      this.repo.finishRun(run, undefined, undefined); // the policy was deleted while it ran
      return;
    }
    const s: PolicyStatus = p.status;
    s.containers = selected;
    if (done.length) s.incremental = incrementalNote(p, done);
    s.checkpoints = this.repo.countCheckpoints(name, 'complete');
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
    this.repo.finishRun(run, p, p.spec.suspend ? undefined : s.nextRunAt);
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
          const containers = await this.listContainers(n.name, sel.runtime);
          return containers
            .filter((c) => selects(sel, n.name, c, this.podLabels) && !fenced.has(`${n.name}/${c.id}`))
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
   * A node's containers, asked at most once per INVENTORY_TTL_MS: when hundreds of policies fire together
   * they share one listing per node instead of each asking every node. A container started within that
   * time is protected from the next run on.
   */
  private listContainers(node: string, runtime: RuntimeName | undefined): Promise<ContainerInfo[]> {
    const key = `${node}/${runtime ?? '*'}`;
    const cached = this.inventory.get(key);
    if (cached && this.now() - cached.at < INVENTORY_TTL_MS) return cached.listing;
    const listing = this.nodes.client(node).containers(runtime);
    this.inventory.set(key, { at: this.now(), listing });
    listing.catch(() => this.inventory.delete(key));
    return listing;
  }

  private intervalFor(p: Policy, compiled: CompiledPolicy): PolicyStatus['interval'] {
    const s = compiled.schedule;
    if (s.kind === 'every') return { ms: s.everyMs, reason: `every ${formatDuration(s.everyMs)}, as the policy says` };
    if (s.kind === 'cron') {
      const at = nextCronTime(s.cron, this.now());
      return { ms: at - this.now(), reason: `cron '${s.expression}' (UTC): next at ${new Date(at).toISOString()}` };
    }
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

function incrementalNote(p: Policy, done: PolicyCheckpoint[] = []): string {
  if (!p.spec.incremental) return 'off: every checkpoint is full';
  const chains = `chains of up to ${p.spec.incremental.fullEvery}`;
  const never = done.find((c) => c.fullBecause?.unsupported);
  if (never) return `full checkpoints: ${never.fullBecause?.reason}`;
  if (!done.length) return `${chains}, from the next run`;
  return `${chains}: ${done.filter((c) => c.parent).length} of the last run's ${done.length} checkpoints built on a parent`;
}

const runId = (now: number) => `r-${now.toString(36)}-${randomBytes(3).toString('hex')}`;
