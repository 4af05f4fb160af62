/**
 * Runs migrations as journaled state machines. Every step is written to the store (step + a "started"
 * event) before it acts; on failure, cancellation or a controller restart, `settle` looks at both nodes and
 * acts so that exactly one copy of the workload runs: the target's if it already runs, else the source's,
 * restored from its own local checkpoint when the dump had stopped it.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { AgentClient } from '../../../agent/src/client.js';
import type { Peer } from '../../../agent/src/transfer.js';
import { FerryError, ignoring, isFerryError } from '../../../agent/src/errors.js';
import type { ContainerInfo } from '../../../agent/src/runtimes/types.js';
import type { NodeRegistry } from '../nodes.js';
import type { MigrationRepo } from '../store/migrations.js';
import { decideAfterRound, estimateDowntimeMs, PAGE_SIZE, RESTORE_PRIOR_MS, type RoundFigures } from './precopy.js';
import type { PodMover } from '../kube/pod-mover.js';
import { type PodJournal, type PodMigrationContext, runPodMigration, settlePodMigration } from './pod-migration.js';
import { checkCompatibility, chooseMemoryLoad, chooseStrategy, sizedMemoryLoad } from './preflight.js';
import {
  containerRequestOf,
  isFinished,
  isPodRequest,
  type MigrationEvent,
  type MigrationRecord,
  type MigrationRequest,
  type PodMigrationRequest,
  type PodMigrationState,
  type Step,
} from './types.js';

/** Steps after which the target may run a copy: rolling back from there must first make sure it does not. */
const TARGET_MAY_RUN: Step[] = ['restore', 'pages', 'verify', 'cleanup'];
/** How long one wait for a page server to finish lasts before the controller asks again (the agent's limit). */
const PAGES_POLL_MS = 30_000;
/** An agent's timings by phase, as a progress message says them: "bundle 3 ms, runcRestore 1455 ms". */
const phasesSaid = (timings: Record<string, number>): string =>
  Object.entries(timings)
    .map(([phase, ms]) => `${phase.replace(/Ms$/, '')} ${ms} ms`)
    .join(', ');
/** How long settle keeps trying to reach a target that may run a copy before it gives up and says so. */
const SETTLE_PATIENCE_MS = 30_000;

/** Post-copy and hybrid end with a lazy final dump: memory follows from the source's page server. */
const isLazy = (m: MigrationRecord) => m.strategy?.used === 'postcopy' || m.strategy?.used === 'hybrid';
const newMigrationId = () => `m-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
const elapsed = (since: number) => Math.round(performance.now() - since);

export class Orchestrator {
  private readonly bus = new EventEmitter();
  private readonly cancelRequested = new Set<string>();
  private readonly active = new Map<string, Promise<void>>();
  private readonly finishedListeners: ((m: MigrationRecord) => void)[] = [];
  /** Kubernetes mode, on the replica holding the Lease: pods can be moved (kube/pod-mover.ts). */
  private pods: PodMover | undefined;
  /** Whether this controller runs in Kubernetes mode at all (usePods was called, leading or not). */
  private kubeMode = false;
  private readonly eventListeners: ((id: string, e: MigrationEvent) => void)[] = [];
  /** Called with a pod migration's record at each of its events (Kubernetes mode's Migration objects). */
  private readonly podRecordListeners = new Set<(m: MigrationRecord) => void>();

  constructor(
    private readonly repo: MigrationRepo,
    private readonly nodes: NodeRegistry,
  ) {
    this.bus.setMaxListeners(0);
  }

  /** Validates against the live source node, journals the migration and starts it; returns at once. */
  async start(req: MigrationRequest): Promise<MigrationRecord> {
    if ((req.strategy === 'postcopy' || req.strategy === 'hybrid') && req.container.runtime !== 'runc') {
      throw new FerryError('unsupported', `${req.strategy} needs runc: ${req.container.runtime} has no lazy restore`, {
        hint: "use strategy 'auto' or 'stopcopy'",
        details: { field: 'strategy' },
      });
    }
    if (req.container.node === req.targetNode) {
      throw new FerryError('bad_request', 'targetNode is the node the container already runs on', { details: { field: 'targetNode' } });
    }
    const ref = req.container.id ?? req.container.name;
    if (!ref) throw new FerryError('bad_request', 'container needs an id or a name', { details: { field: 'container.id' } });
    this.nodes.get(req.container.node, 'container.node');
    this.nodes.get(req.targetNode, 'targetNode');
    const container = await findContainer(this.nodes.client(req.container.node), req.container.runtime, ref, req.container.node);
    if (container.state !== 'running') {
      throw new FerryError('container_not_running', `${container.name} on ${req.container.node} is ${container.state}, not running`, {
        hint: 'only a running container can be migrated',
        details: { field: 'container' },
      });
    }
    const m = this.accept(newMigrationId(), container.name, {
      request: req,
      source: {
        node: req.container.node,
        runtime: req.container.runtime,
        containerId: container.id,
        containerName: container.name,
        ...(container.imageId ? { imageId: container.imageId } : {}),
      },
      target: { node: req.targetNode, containerName: container.name },
    });
    this.launch(m, () => this.runToEnd(m, () => this.containerSteps(m)));
    return m;
  }

  /**
   * Kubernetes mode: the replica holding the Lease moves pods, and settles the pod migrations an earlier
   * run of it left unfinished (their journal is in this replica's store); undefined when it stops leading.
   */
  usePods(mover: PodMover | undefined): string[] {
    this.kubeMode = true;
    this.pods = mover;
    if (!mover) return [];
    const unfinished = this.repo.unfinished().filter((m) => m.pod && !this.active.has(m.id));
    for (const m of unfinished) {
      this.emit(m, { type: 'progress', step: m.step, message: `settling a pod migration left during ${m.step}` });
      this.launch(m, () => this.settle(m, new FerryError('interrupted', `the controller restarted during ${m.step}`)));
    }
    return unfinished.map((m) => m.id);
  }

  /** Called with a pod migration's record at each of its events; returns the unsubscribe function. */
  onPodRecord(fn: (m: MigrationRecord) => void): () => void {
    this.podRecordListeners.add(fn);
    return () => this.podRecordListeners.delete(fn);
  }

  /**
   * A pod migration another replica ran and left unfinished, from its Migration object: journaled here,
   * so that usePods settles it. One this store knows already is left as it is.
   */
  adopt(m: MigrationRecord): boolean {
    if (!m.pod || this.repo.get(m.id)) return false;
    this.repo.insert(m);
    this.emit(m, { type: 'progress', step: m.step, message: 'taken over from the replica that held the Lease before' });
    return true;
  }

  /** POST /migrate with a pod (Kubernetes mode): the pod's containers move together (pod-migration.ts). */
  async startPod(req: PodMigrationRequest): Promise<MigrationRecord> {
    const pods = this.pods;
    if (!this.kubeMode) {
      throw new FerryError('bad_request', 'pods are migrated in Kubernetes mode only (ferry controller --kube)', {
        hint: 'standalone, migrate the containers: {container: {node, runtime, name}}',
        details: { field: 'pod' },
      });
    }
    if (!pods) {
      throw new FerryError('not_leader', 'this replica does not hold the Lease; the one that does moves pods', {
        hint: 'send the migration to the replica holding the Lease (kubectl get lease ferry-controller -o yaml shows it)',
        details: { field: 'pod' },
      });
    }
    const { namespace, name } = req.pod;
    const described = await pods.describe(namespace, name);
    this.nodes.get(described.node, 'pod');
    this.nodes.get(req.targetNode, 'targetNode');
    if (described.node === req.targetNode) {
      throw new FerryError('bad_request', `${namespace}/${name} already runs on ${req.targetNode}`, { details: { field: 'targetNode' } });
    }
    const id = newMigrationId();
    const replacement = pods.replacementName(name, id);
    const m = this.accept(id, `pod ${namespace}/${name}`, {
      request: req,
      source: { node: described.node, runtime: 'runc', containerId: described.uid, containerName: `${namespace}/${name}` },
      target: { node: req.targetNode, containerName: `${namespace}/${replacement}` },
      pod: { namespace, name, uid: described.uid, containers: [], replacement },
    });
    this.launch(m, () => this.runToEnd(m, () => runPodMigration(this.podContext(m))));
    return m;
  }

  /** Runs a migration's steps: done, it succeeded; failed anywhere, settle brings back one running copy. */
  private async runToEnd(m: MigrationRecord, steps: () => Promise<void>): Promise<void> {
    const started = performance.now();
    try {
      await steps();
      m.figures.totalMs = elapsed(started);
      m.status = 'succeeded';
      m.step = 'done';
      this.finish(m);
    } catch (err) {
      m.figures.totalMs = elapsed(started);
      await this.settle(m, err);
    }
  }

  /** A new migration's record, journaled (a second one of the same container is refused there) and announced. */
  private accept(id: string, what: string, parts: Pick<MigrationRecord, 'request' | 'source' | 'target' | 'pod'>): MigrationRecord {
    const now = new Date().toISOString();
    const m: MigrationRecord = {
      id,
      status: 'running',
      step: 'preflight',
      ...parts,
      checkpointId: `mig-${id.slice(2)}`,
      rounds: [],
      figures: {},
      createdAt: now,
      updatedAt: now,
    };
    this.repo.insert(m);
    this.emit(m, { type: 'step', step: 'preflight', message: `migration of ${what} from ${m.source.node} to ${m.target.node} accepted` });
    return m;
  }

  private podContext(m: MigrationRecord): PodMigrationContext {
    if (!m.pod || !isPodRequest(m.request)) throw new FerryError('internal', `${m.id} is not a pod migration`);
    if (!this.pods) throw new FerryError('not_leader', `pod migration ${m.id} needs the Kubernetes API, which this replica no longer uses`);
    const journal: PodJournal = {
      step: (step, fn) => this.step(m, step, fn),
      emit: (e) => this.emit(m, e),
      save: () => this.repo.save(m),
    };
    return { m: m as MigrationRecord & { pod: PodMigrationState }, request: m.request, nodes: this.nodes, pods: this.pods, journal };
  }

  get(id: string): MigrationRecord {
    const m = this.repo.get(id);
    if (!m) throw new FerryError('migration_not_found', `no migration ${id}`, { hint: 'list migrations with GET /migrations' });
    return m;
  }

  list(): MigrationRecord[] {
    return this.repo.list();
  }

  events(id: string, afterSeq = 0): MigrationEvent[] {
    this.get(id);
    return this.repo.events(id, afterSeq);
  }

  /** Called with every migration that ends, whatever its outcome (metrics). */
  onFinished(fn: (m: MigrationRecord) => void): void {
    this.finishedListeners.push(fn);
  }

  /** Called with every event of every migration (structured logs). */
  onEvent(fn: (id: string, e: MigrationEvent) => void): void {
    this.eventListeners.push(fn);
  }

  /** Number of migrations in flight in this controller. */
  running(): number {
    return this.active.size;
  }

  /** Live events of one migration; returns the unsubscribe function. */
  subscribe(id: string, fn: (e: MigrationEvent) => void): () => void {
    this.bus.on(id, fn);
    return () => this.bus.off(id, fn);
  }

  /** Takes effect at the next step boundary; the migration then rolls back. */
  cancel(id: string): MigrationRecord {
    const m = this.get(id);
    if (isFinished(m)) throw new FerryError('conflict', `migration ${id} has already ${m.status}`, { details: { status: m.status } });
    this.cancelRequested.add(id);
    this.emit(m, { type: 'progress', step: m.step, message: 'cancellation requested; it takes effect at the next step' });
    return m;
  }

  /** Resolves when the migration's current run (or recovery) ends; for tests and shutdown. */
  async settled(id: string): Promise<MigrationRecord> {
    await this.active.get(id);
    return this.get(id);
  }

  /** At start-up: every migration a previous controller left unfinished is settled from its journal. */
  recover(): string[] {
    // Pod migrations need the Kubernetes API: the Lease holder settles them (usePods).
    const unfinished = this.repo.unfinished().filter((m) => !m.pod);
    for (const m of unfinished) {
      this.emit(m, { type: 'progress', step: m.step, message: `controller restarted during ${m.step}; settling from the journal` });
      this.launch(m, () =>
        this.settle(m, new FerryError('interrupted', `the controller restarted during ${m.step}`, { hint: 'see the rollback outcome' })),
      );
    }
    return unfinished.map((m) => m.id);
  }

  async drain(): Promise<void> {
    await Promise.allSettled([...this.active.values()]);
  }

  private launch(m: MigrationRecord, fn: () => Promise<void>): void {
    const run = fn()
      .catch((err: unknown) => {
        // settle itself failed: say so in the record rather than lose the migration in a log.
        m.status = 'failed';
        m.rollback = { reason: m.error?.message ?? 'unknown', outcome: `settling failed: ${(err as Error).message}` };
        this.finish(m);
      })
      .finally(() => this.active.delete(m.id));
    this.active.set(m.id, run);
  }

  private emit(m: MigrationRecord, e: Omit<MigrationEvent, 'seq' | 'at'>): void {
    const event = this.repo.appendEvent(m.id, e);
    this.bus.emit(m.id, event);
    for (const fn of this.eventListeners) fn(m.id, event);
    if (m.pod) for (const fn of this.podRecordListeners) fn(m);
  }

  /** Journals the step before it acts, so a restarted controller knows what may have happened. */
  private async step<T>(m: MigrationRecord, step: Step, fn: () => Promise<T>): Promise<T> {
    if (this.cancelRequested.has(m.id)) throw new FerryError('cancelled', `cancelled before ${step}`);
    m.step = step;
    this.repo.save(m);
    this.emit(m, { type: 'step', step, message: `${step} started` });
    const t0 = performance.now();
    const result = await fn();
    this.emit(m, { type: 'step', step, message: `${step} done in ${elapsed(t0)} ms` });
    return result;
  }

  private async containerSteps(m: MigrationRecord): Promise<void> {
    const source = this.nodes.client(m.source.node, m.id);
    const target = this.nodes.client(m.target.node, m.id);
    const runtime = m.source.runtime;
    await this.step(m, 'preflight', async () => {
      // The agents' cached probes: CRIU and the kernel do not change under a running agent, and a fresh
      // probe (criu check on both nodes) would add half a second to every migration.
      const [sourceCaps, targetCaps, taken, targetStats] = await Promise.all([
        source.node(),
        target.node(),
        target.containers(runtime).then((cs) => cs.find((c) => c.name === m.target.containerName)),
        target.stats(),
        // podman and docker restore onto the image the container was created from: it must be there.
        m.source.imageId ? target.assertImage(runtime, m.source.imageId) : undefined,
      ]);
      m.restoreEstimateMs = targetStats.restoreMs[runtime] ?? RESTORE_PRIOR_MS;
      checkCompatibility(sourceCaps, targetCaps, runtime);
      if (taken) {
        throw new FerryError('conflict', `${m.target.node} already has a ${runtime} container named ${m.target.containerName}`, {
          hint: 'remove it there first',
        });
      }
      m.strategy = chooseStrategy(containerRequestOf(m).strategy, sourceCaps, runtime, targetCaps);
      const memoryLoad = chooseMemoryLoad(containerRequestOf(m).memoryLoad ?? 'auto', m.strategy.used, runtime, targetCaps);
      if (memoryLoad) m.memoryLoad = memoryLoad;
      this.emit(m, {
        type: 'progress',
        step: 'preflight',
        message: `strategy ${m.strategy.used}: ${m.strategy.reason}`,
        data: { ...m.strategy },
      });
      if (runtime === 'podman' && m.strategy.used === 'stopcopy') await this.prepareTwin(m, source, target);
    });

    const peer = this.nodes.peer(m.target.node);
    if (m.strategy?.used === 'precopy' || m.strategy?.used === 'hybrid') {
      await this.step(m, 'rounds', () => this.precopyRounds(m, source, peer));
    }

    const postcopy = isLazy(m);
    let frozenAt = 0;
    await this.step(m, 'checkpoint', async () => {
      frozenAt = performance.now();
      const parent = m.precopyFallback ? undefined : m.rounds.at(-1)?.checkpointId;
      const ck = await source.checkpoint({
        runtime,
        container: m.source.containerId,
        id: m.checkpointId,
        leaveRunning: false,
        // Lives only as long as the migration: kept plain, whatever the agents keep at rest.
        transient: true,
        ...(parent ? { parent } : {}),
        ...(postcopy ? { lazy: true } : {}),
        ...(m.target.twinId ? { inPlace: true } : {}),
      });
      m.figures.dumpMs = ck.timings?.checkpointMs;
      m.figures.frozenTimeMs = ck.stats?.frozenTimeMs;
      m.figures.finalPagesWritten = ck.stats?.pagesWritten;
      this.emit(m, {
        type: 'progress',
        step: 'checkpoint',
        message: `dumped ${ck.totalBytes} bytes; CRIU froze the container for ${ck.stats?.frozenTimeMs ?? '?'} ms; ${phasesSaid(ck.timings ?? {})}`,
        data: { bytes: ck.totalBytes, pagesWritten: ck.stats?.pagesWritten, ...ck.timings },
      });
    });

    await this.step(m, 'transfer', async () => {
      // Rounds already on the target are skipped: only the final delta and the non-memory state move now.
      const sent = await source.send(m.checkpointId, peer);
      m.figures.transferMs = sent.ms;
      m.figures.bytesSent = sent.bytes;
      m.figures.bandwidthBytesPerSecond = sent.bytesPerSecond;
      this.emit(m, {
        type: 'progress',
        step: 'transfer',
        message: `sent ${sent.bytes} bytes in ${sent.ms} ms${peer.ssh ? ` over SSH to ${peer.ssh.host}` : ''}`,
        data: { ...sent },
      });
    });

    await this.step(m, 'restore', async () => {
      // Post-copy: the target pulls memory from the source node's page server, at the agent's address.
      const pageServer = postcopy ? { pageServer: { host: new URL(source.url).hostname } } : {};
      const into = m.target.twinId ? { into: m.target.twinId } : {};
      const memoryBytes = PAGE_SIZE * Math.max(m.rounds[0]?.pagesWritten ?? 0, m.figures.finalPagesWritten ?? 0);
      const memoryLoad = sizedMemoryLoad(m.memoryLoad, { memoryBytes });
      if (memoryLoad) {
        m.memoryLoad = memoryLoad;
        this.emit(m, {
          type: 'progress',
          step: 'restore',
          message: `memory loaded ${memoryLoad.used === 'lazy' ? 'lazily' : 'eagerly'}: ${memoryLoad.reason}`,
        });
      }
      const lazyMemory = memoryLoad?.used === 'lazy' ? { lazyMemory: true } : {};
      const r = await target.restore(m.checkpointId, { name: m.target.containerName, ...pageServer, ...into, ...lazyMemory });
      m.figures.restoreMs = r.timings.restoreMs;
      m.figures.downtimeMs = elapsed(frozenAt);
      const criu = r.stats
        ? `; CRIU forked in ${r.stats.forkingTimeMs} ms, restored in ${r.stats.restoreTimeMs} ms, ${r.stats.pagesRestored} pages copied in`
        : '';
      this.emit(m, {
        type: 'progress',
        step: 'restore',
        message: `restored on ${m.target.node}: ${phasesSaid(r.timings)}${criu}`,
        data: { ...r.timings, ...(r.stats ? { criu: r.stats } : {}) },
      });
      if (r.merge) {
        m.mergedRounds = r.merge;
        const message =
          'unmerged' in r.merge
            ? `restored from the rounds as they are: ${r.merge.unmerged}`
            : `restored from the rounds merged on ${m.target.node}: ${r.merge.pages} pages, ${r.merge.lazyPages} of them loaded lazily; laid out in ${r.merge.ms} ms`;
        this.emit(m, { type: 'progress', step: 'restore', message });
      }
    });
    if (postcopy) await this.step(m, 'pages', () => this.awaitPages(m, source));
    else if (m.memoryLoad?.used === 'lazy') await this.step(m, 'pages', () => this.awaitMemoryLoad(m, target));

    await this.step(m, 'verify', () => verifyRunning(target, m));
    await this.step(m, 'cleanup', () => this.cleanUp(m, source, target));
  }

  /**
   * podman stop-and-copy: a stopped twin of the container on the target, made while the source still runs,
   * so that the final dump is taken in place and restored into it: podman then neither writes and unpacks
   * an export archive nor creates the container inside the downtime (podman-twin.ts). Where no faithful
   * twin can be made, the migration goes on with export and import and says why.
   */
  private async prepareTwin(m: MigrationRecord, source: AgentClient, target: AgentClient): Promise<void> {
    const c = await source.container(m.source.runtime, m.source.containerId);
    const fallBack = (why: string) =>
      this.emit(m, { type: 'progress', step: 'preflight', message: `no twin on ${m.target.node} (${why}); using export and import` });
    if (!c.createCommand || !c.image || !c.imageId) return fallBack('podman did not record how the container was created');
    try {
      const twin = await target.prepareContainer(m.source.runtime, {
        name: m.target.containerName,
        source: { createCommand: c.createCommand, image: c.image, imageId: c.imageId },
      });
      m.target.twinId = twin.id;
      this.repo.save(m);
      this.emit(m, {
        type: 'progress',
        step: 'preflight',
        message: `twin ${twin.id.slice(0, 12)} prepared on ${m.target.node}: the final dump is taken in place and restored into it`,
      });
    } catch (err) {
      if (!isFerryError(err) || !['unsupported', 'runtime_failed'].includes(err.code)) throw err;
      fallBack(err.message);
    }
  }

  /**
   * Pre-dumps while the container runs, each on top of the previous and sent to the target at once, until
   * decideAfterRound says a final dump now costs little enough or more rounds cannot help.
   */
  private async precopyRounds(m: MigrationRecord, source: AgentClient, peer: Peer): Promise<void> {
    // podman keeps a single pre-checkpoint per container: its pre-copy is one round.
    const req = containerRequestOf(m);
    const maxRounds = m.source.runtime === 'podman' ? 1 : req.maxRounds;
    const limits = { maxDowntimeMs: req.maxDowntimeMs, maxRounds, maxBytesFactor: req.maxBytesFactor };
    for (let i = m.rounds.length + 1; ; i++) {
      if (this.cancelRequested.has(m.id)) throw new FerryError('cancelled', `cancelled before pre-copy round ${i}`);
      const id = `${m.checkpointId}-r${i}`;
      const parent = m.rounds.at(-1)?.checkpointId;
      const t0 = performance.now();
      const ck = await source.checkpoint({
        runtime: m.source.runtime,
        container: m.source.containerId,
        id,
        preDump: true,
        transient: true,
        ...(parent ? { parent } : {}),
      });
      const dumpMs = elapsed(t0);
      const sent = await source.send(id, peer);
      const figures = {
        frozenTimeMs: ck.stats?.frozenTimeMs ?? 0,
        pagesWritten: ck.stats?.pagesWritten ?? 0,
        bandwidthBytesPerSecond: sent.bytesPerSecond,
      };
      const round: RoundFigures = {
        round: i,
        checkpointId: id,
        ...figures,
        dumpMs,
        bytesSent: sent.bytes,
        transferMs: sent.ms,
        estimatedDowntimeMs: estimateDowntimeMs(figures, m.restoreEstimateMs),
      };
      m.rounds.push(round);
      m.figures.estimatedDowntimeMs = round.estimatedDowntimeMs;
      this.repo.save(m);
      this.emit(m, {
        type: 'round',
        step: 'rounds',
        message: `round ${i}: ${round.pagesWritten} pages, ${round.bytesSent} bytes in ${round.transferMs} ms; a final dump now would cost about ${round.estimatedDowntimeMs} ms`,
        data: { ...round },
      });
      const decision = decideAfterRound(m.rounds, limits);
      if (decision.action === 'final-dump') {
        m.precopyStop = decision.reason;
        // Hybrid's lazy final dump keeps its parent: what it leaves behind is fetched on demand anyway.
        if (decision.withoutRounds && m.strategy?.used === 'precopy') m.precopyFallback = true;
        this.emit(m, { type: 'progress', step: 'rounds', message: `rounds end: ${decision.reason}` });
        return;
      }
    }
  }

  /** Post-copy: the target runs while its memory arrives; the source serves until the last page is out. */
  private awaitPages(m: MigrationRecord, source: AgentClient): Promise<void> {
    return this.followMemory(m, () => source.pageServer(m.checkpointId, PAGES_POLL_MS), {
      running: 'serving',
      done: 'served',
      failure: (state, error) =>
        new FerryError('transfer_failed', `the page server on ${m.source.node} ${state === 'failed' ? `failed: ${error}` : 'is gone'}`, {
          hint: 'check the link between the nodes; the source runs again when its page server fails',
        }),
      what: 'arriving',
    });
  }

  /** A lazy memory load on the target: the copy is whole once its daemon has loaded every page. */
  private awaitMemoryLoad(m: MigrationRecord, target: AgentClient): Promise<void> {
    return this.followMemory(m, () => target.memoryLoad(m.checkpointId, PAGES_POLL_MS), {
      running: 'loading',
      done: 'loaded',
      failure: (state, error) =>
        new FerryError(
          'criu_failed',
          `loading memory on ${m.target.node} ${state === 'failed' ? `failed: ${error}` : 'stopped unseen (its agent restarted)'}`,
          {
            hint: 'the source is restored from its checkpoint; migrate again with memoryLoad eager',
          },
        ),
      what: 'loading',
    });
  }

  /** Long-polls where the memory of a copy that already runs stands until all of it is in. */
  private async followMemory(
    m: MigrationRecord,
    poll: () => Promise<{ state: string; error?: string }>,
    o: { running: string; done: string; failure: (state: string, error?: string) => FerryError; what: string },
  ): Promise<void> {
    const t0 = performance.now();
    for (;;) {
      if (this.cancelRequested.has(m.id)) throw new FerryError('cancelled', `cancelled while memory was still ${o.what}`);
      const { state, error } = await poll();
      if (state === o.done) break;
      if (state !== o.running) throw o.failure(state, error);
      this.emit(m, { type: 'progress', step: 'pages', message: `memory still ${o.what} after ${elapsed(t0)} ms` });
    }
    m.figures.pagesMs = elapsed(t0);
    this.emit(m, { type: 'progress', step: 'pages', message: `all memory in after ${m.figures.pagesMs} ms` });
  }

  /** Best effort: a leftover here costs disk, not the workload, so it is reported and never fails the migration. */
  private async cleanUp(m: MigrationRecord, source: AgentClient, target: AgentClient): Promise<void> {
    const leftovers: string[] = [];
    const attempt = (what: string, p: Promise<unknown>) => p.catch((err: unknown) => leftovers.push(`${what}: ${(err as Error).message}`));
    await Promise.all([
      attempt(`source container ${m.source.containerName}`, source.removeContainer(m.source.runtime, m.source.containerId)),
      attempt(`source checkpoints of ${m.checkpointId}`, deleteChain(source, m)),
      attempt(`target checkpoints of ${m.checkpointId}`, deleteChain(target, m)),
    ]);
    if (leftovers.length) this.emit(m, { type: 'progress', step: 'cleanup', message: `left behind: ${leftovers.join('; ')}` });
  }

  /**
   * Brings the world back to exactly one running copy after a failure, a cancellation or a restart, and
   * finishes the record. Idempotent: it looks at both nodes rather than trusting what the journal hoped.
   */
  private async settle(m: MigrationRecord, err: unknown): Promise<void> {
    const failedStep = m.step === 'rollback' ? (m.error?.step ?? 'rollback') : m.step;
    const ferr = isFerryError(err) ? err : new FerryError('internal', (err as Error).message ?? String(err));
    m.error ??= {
      code: ferr.code,
      message: ferr.message,
      step: failedStep,
      ...(ferr.hint ? { hint: ferr.hint } : {}),
      ...(ferr.criuLog?.length ? { criuLog: ferr.criuLog } : {}),
    };
    if (m.pod) return this.settlePod(m, failedStep);
    const source = this.nodes.client(m.source.node, m.id);
    const target = this.nodes.client(m.target.node, m.id);

    if (isLazy(m)) await this.settlePageServer(m, source, target, failedStep);
    if (TARGET_MAY_RUN.includes(failedStep)) {
      const running = await patiently(() => runningOn(target, m.source.runtime, m.target.containerName));
      if (running === 'unknown') {
        m.status = 'failed';
        m.rollback = {
          reason: m.error.message,
          outcome: `not rolled back: ${m.target.node} cannot be reached, and it may run the restored copy; restoring the source too could make two. Check ${m.target.node}, then restore checkpoint ${m.checkpointId} on ${m.source.node} if the target does not run it`,
        };
        this.finish(m);
        return;
      }
      if (
        running === true &&
        (await runningOn(source, m.source.runtime, m.source.containerName)) === false &&
        (await this.targetMemoryWhole(m, target))
      ) {
        // The target runs and the source does not: finishing forward keeps the one copy there is.
        this.emit(m, {
          type: 'progress',
          step: failedStep,
          message: `${m.target.containerName} runs on ${m.target.node}; finishing forward`,
        });
        await this.cleanUp(m, source, target);
        m.status = 'succeeded';
        m.step = 'done';
        m.rollback = {
          reason: m.error.message,
          outcome: `not needed: the restored copy runs on ${m.target.node}; the migration was finished forward`,
        };
        delete m.error;
        this.finish(m);
        return;
      }
    }

    m.step = 'rollback';
    this.repo.save(m);
    this.emit(m, { type: 'rollback', step: 'rollback', message: `rolling back after ${failedStep} failed: ${m.error.message}` });
    const notes: string[] = [];
    const tryTo = async (what: string, p: Promise<unknown>) => {
      await p.catch((e: unknown) => notes.push(`${what} failed: ${(e as Error).message}`));
    };
    // The target's copy first: it must be gone before the source runs again. A twin is this migration's own
    // from the start; any other container of that name is only once a restore may have made it.
    if (m.target.twinId || (failedStep !== 'preflight' && failedStep !== 'checkpoint')) {
      await tryTo(
        `removing ${m.target.containerName} on ${m.target.node}`,
        target.removeContainer(m.source.runtime, m.target.twinId ?? m.target.containerName),
      );
    }
    const sourceRunning = await runningOn(source, m.source.runtime, m.source.containerName);
    const outcome =
      sourceRunning === true ? `${m.source.containerName} kept running on ${m.source.node}` : await this.restoreSource(m, source);
    // Deleting the source's checkpoint ends a send still under way (a restarted controller finds one), so
    // the target's copy is deleted after it: either it arrived whole and goes now, or it never lands.
    await tryTo(`deleting ${m.checkpointId} on ${m.source.node}`, deleteChain(source, m));
    if (failedStep !== 'preflight') await tryTo(`deleting ${m.checkpointId} on ${m.target.node}`, deleteChain(target, m));
    let result = outcome;
    if (notes.length) result += `; ${notes.join('; ')}`;
    m.rollback = { reason: m.error.message, outcome: result };
    m.status = m.error.code === 'cancelled' ? 'cancelled' : 'failed';
    this.emit(m, { type: 'rollback', step: 'rollback', message: result });
    this.finish(m);
  }

  /**
   * Post-copy leaves the source frozen behind a page server. While no copy runs on the target, stopping it
   * lets the source run on. A target copy that runs is given time to get its memory: served means it has
   * everything and the source is gone; failed means CRIU let the source run again. Still serving after
   * that wait, it is stopped too: the source runs on, and rollback removes the target's copy, short of memory.
   */
  private async settlePageServer(m: MigrationRecord, source: AgentClient, target: AgentClient, failedStep: Step): Promise<void> {
    if (failedStep === 'preflight') return;
    const targetRuns = TARGET_MAY_RUN.includes(failedStep) ? await runningOn(target, m.source.runtime, m.target.containerName) : false;
    const state =
      targetRuns === false
        ? 'serving'
        : await source.pageServer(m.checkpointId, PAGES_POLL_MS).then(
            (s) => s.state,
            () => 'unknown' as const,
          );
    if (state !== 'serving') return;
    this.emit(m, { type: 'progress', step: failedStep, message: `stopping the page server on ${m.source.node}; the source runs on` });
    await source.deleteCheckpoint(m.checkpointId).catch(() => undefined);
  }

  /**
   * A copy restored with lazyMemory runs before all its memory is in: it is whole only once its daemon has
   * loaded every page. One that failed, or whose agent restarted meanwhile (the daemon went with it), is not
   * kept: the source's own checkpoint is still there to restore from.
   */
  private async targetMemoryWhole(m: MigrationRecord, target: AgentClient): Promise<boolean> {
    if (m.memoryLoad?.used !== 'lazy') return true;
    const { state } = await target.memoryLoad(m.checkpointId, PAGES_POLL_MS).catch(() => ({ state: 'unknown' }));
    if (state === 'loaded') return true;
    this.emit(m, {
      type: 'progress',
      step: 'rollback',
      message: `${m.target.containerName} on ${m.target.node} lacks memory (load ${state}): not kept`,
    });
    return false;
  }

  private async restoreSource(m: MigrationRecord, source: AgentClient): Promise<string> {
    if (isLazy(m)) {
      throw new FerryError(
        'internal',
        `${m.source.containerName} runs neither on ${m.target.node} nor on ${m.source.node}: post-copy had served its memory to the target, which no longer runs it`,
      );
    }
    const has = await source.getCheckpoint(m.checkpointId).then(
      () => true,
      (e: unknown) => (isFerryError(e) && e.code === 'checkpoint_not_found' ? false : Promise.reject(e)),
    );
    if (!has) {
      throw new FerryError(
        'internal',
        `${m.source.containerName} does not run on ${m.source.node} and there is no checkpoint to restore it from`,
      );
    }
    if (m.target.twinId) {
      // Dumped in place: the stopped source takes its images back, its writable layer never left.
      await source.restore(m.checkpointId, { into: m.source.containerId });
      return `${m.source.containerName} restored in place on ${m.source.node} from its checkpoint ${m.checkpointId}`;
    }
    // A stopped source (podman, docker) still holds its name; the checkpoint has everything it had.
    await source.removeContainer(m.source.runtime, m.source.containerName);
    await source.restore(m.checkpointId, { name: m.source.containerName });
    return `${m.source.containerName} restored on ${m.source.node} from its own checkpoint ${m.checkpointId}`;
  }

  private async settlePod(m: MigrationRecord, failedStep: Step): Promise<void> {
    const reason = m.error?.message ?? 'unknown';
    m.step = 'rollback';
    this.repo.save(m);
    this.emit(m, { type: 'rollback', step: 'rollback', message: `settling after ${failedStep}: ${reason}` });
    const { forward, outcome } = await settlePodMigration(this.podContext(m));
    m.rollback = { reason, outcome };
    if (forward) {
      m.status = 'succeeded';
      m.step = 'done';
      delete m.error;
    } else {
      m.status = m.error?.code === 'cancelled' ? 'cancelled' : 'failed';
    }
    this.emit(m, { type: 'rollback', step: 'rollback', message: outcome });
    this.finish(m);
  }

  private finish(m: MigrationRecord): void {
    m.finishedAt = new Date().toISOString();
    this.cancelRequested.delete(m.id);
    this.repo.save(m);
    const summary =
      m.status === 'succeeded'
        ? `migrated to ${m.target.node}; downtime ${m.figures.downtimeMs ?? '?'} ms, total ${m.figures.totalMs ?? '?'} ms`
        : `${m.status} at ${m.error?.step ?? m.step}: ${m.error?.message ?? ''}; ${m.rollback?.outcome ?? ''}`;
    this.emit(m, { type: 'finished', step: m.step, message: summary, data: { status: m.status } });
    for (const fn of this.finishedListeners) fn(m);
  }
}

async function findContainer(
  client: AgentClient,
  runtime: MigrationRequest['container']['runtime'],
  ref: string,
  node: string,
): Promise<ContainerInfo> {
  const all = await client.containers(runtime);
  const exact = all.find((c) => c.id === ref || c.name === ref);
  const byPrefix = all.filter((c) => c.id.startsWith(ref));
  const found = exact ?? (byPrefix.length === 1 ? byPrefix[0] : undefined);
  if (!found) {
    throw new FerryError('container_not_found', `no ${runtime} container '${ref}' on node ${node}`, {
      hint: `list them with GET /nodes/${node}/containers`,
      details: { field: 'container' },
    });
  }
  return found;
}

/** true/false when the node answered, 'unknown' when it did not. */
async function runningOn(client: AgentClient, runtime: ContainerInfo['runtime'], name: string): Promise<boolean | 'unknown'> {
  try {
    return (await client.containers(runtime)).some((c) => c.name === name && c.state === 'running');
  } catch {
    return 'unknown';
  }
}

async function patiently(probe: () => Promise<boolean | 'unknown'>): Promise<boolean | 'unknown'> {
  const deadline = Date.now() + SETTLE_PATIENCE_MS;
  for (let wait = 200; ; wait = Math.min(wait * 2, 5_000)) {
    const answer = await probe();
    if (answer !== 'unknown' || Date.now() > deadline) return answer;
    await new Promise((r) => setTimeout(r, wait));
  }
}

async function verifyRunning(target: AgentClient, m: MigrationRecord): Promise<void> {
  const running = await runningOn(target, m.source.runtime, m.target.containerName);
  if (running !== true) {
    throw new FerryError('runtime_failed', `${m.target.containerName} does not run on ${m.target.node} after its restore`, {
      hint: 'see the target agent log',
    });
  }
}

/**
 * The final checkpoint, a round that may have been under way when things stopped, then the recorded rounds
 * newest first: a store refuses to delete a parent before its child.
 */
async function deleteChain(client: AgentClient, m: MigrationRecord): Promise<void> {
  const inFlight = m.strategy?.used === 'precopy' || m.strategy?.used === 'hybrid' ? [`${m.checkpointId}-r${m.rounds.length + 1}`] : [];
  for (const id of [m.checkpointId, ...inFlight, ...m.rounds.map((r) => r.checkpointId).reverse()]) {
    await client.deleteCheckpoint(id).catch(ignoring('checkpoint_not_found'));
  }
}
