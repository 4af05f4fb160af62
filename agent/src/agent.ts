/**
 * The agent's behaviour, independent of HTTP: find containers through the drivers, write checkpoints into
 * the store, verify before restoring. One operation per container at a time.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { type Hold, HoldRegistry } from './holds.js';
import { FerryError } from './errors.js';
import { probeNode, type NodeCapabilities } from './criu/probe.js';
import type { CriuRestoreStats } from './criu/stats.js';
import { assertCheckpointId, assertContainerRef, newCheckpointId } from './store/ids.js';
import type { Manifest } from './store/manifest.js';
import type { PlainView } from './store/plain-view.js';
import type { TlsIdentity } from './tls/identity.js';
import type { ImageStore } from './store/store.js';
import { RUNTIME_NAMES, type ContainerInfo, type PrepareRequest, type RuntimeDriver, type RuntimeName } from './runtimes/types.js';
import { type Readable, Transform } from 'node:stream';
import { watchdog } from './watchdog.js';
import { type Peer, type SendResult, sendCheckpoint } from './transfer.js';
import { freePort, type PageServer } from './runtimes/lazy.js';
import { BackgroundWork } from './background.js';
import { RoundMerges } from './round-merges.js';

export interface AgentOptions {
  node: string;
  store: ImageStore;
  drivers: RuntimeDriver[];
  criu?: string;
  /** A transfer in either direction fails after this long without progress (default 30 s). */
  transferStallMs?: number;
  /** Private key for peers reached over SSH. */
  sshKey?: Buffer;
  /** This agent's certificate, shown to peers served over mTLS. */
  tls?: TlsIdentity;
  /** Where containers held frozen for coordinated checkpoints are recorded (holds.ts). */
  holdsFile?: string;
}

export interface CheckpointParams {
  runtime: RuntimeName;
  container: string;
  leaveRunning?: boolean;
  preDump?: boolean;
  parent?: string;
  id?: string;
  /** Post-copy: everything but memory now; memory served from a page server until pulled (runc). */
  lazy?: boolean;
  /** Kept plain whatever the store's at-rest settings: a migration's own checkpoints live seconds. */
  transient?: boolean;
  /** podman: dumped in the container's own directory, restorable only into a prepared twin or itself. */
  inPlace?: boolean;
}

export interface PrepareParams {
  name: string;
  source: PrepareRequest['source'];
}

export interface HoldParams {
  containers: { runtime: RuntimeName; container: string }[];
  ttlMs: number;
}

export interface RestoreParams {
  name?: string;
  runtime?: RuntimeName;
  /** Where a lazy checkpoint's memory is served: the node that took it. */
  pageServer?: { host: string };
  /** An in-place checkpoint's container here: a prepared twin, or the stopped original. */
  into?: string;
  /**
   * The process resumes before its memory is loaded: CRIU's lazy-pages daemon loads it from this node's
   * images meanwhile (userfaultfd; runc). Downtime loses the copy of all memory; GET .../memory says when
   * it is done, and until then the checkpoint cannot be deleted.
   */
  lazyMemory?: boolean;
}

export interface PageServerState {
  /** unknown: this agent did not start it, or restarted since (the page server does not outlive it). */
  state: 'serving' | 'served' | 'failed' | 'unknown';
  error?: string;
}

export interface MemoryLoadState {
  /** unknown: not restored with lazyMemory here, or the agent restarted since (the daemon does not outlive it). */
  state: 'loading' | 'loaded' | 'failed' | 'unknown';
  error?: string;
}

export interface RestoreResult {
  checkpoint: string;
  container: ContainerInfo;
  stats?: CriuRestoreStats;
  /** restoreMs is the whole call, verification included (they overlap); the driver's phases where it says. */
  timings: { verifyMs: number; restoreMs: number; [phase: string]: number };
  /** A final dump on pre-copy rounds: restored from the rounds merged as they arrived, or why not. */
  merge?: MergeOutcome;
}

/** ms: what laying out the merged images took, inside the restore (and so inside a migration's downtime). */
export type MergeOutcome = { pages: number; lazyPages: number; ms: number } | { unmerged: string };

const RECENT_RESTORES = 20;
/**
 * An import is checked byte for byte as it arrives; a restore within this long after it does not read it
 * all again. A migration's own (transient) checkpoints are trusted so for as long as this agent runs: a
 * pre-copy chain's first round can arrive minutes before the final restore, which would otherwise re-hash
 * all of memory inside the downtime. Anything else older is verified as any other checkpoint.
 */
const FRESH_IMPORT_MS = 60_000;
/** Longer than any import takes between its first byte and its seal. */
const DELETION_MEMORY_MS = 10 * 60_000;
/** How long deleting a checkpoint waits for a lazy memory load from it to end before refusing. */
const DELETE_WAITS_FOR_LOAD_MS = 10_000;
const since = (t0: number) => Math.round((performance.now() - t0) * 1000) / 1000;

export class Agent {
  readonly node: string;
  readonly store: ImageStore;
  private readonly drivers = new Map<RuntimeName, RuntimeDriver>();
  private readonly criu: string;
  readonly transferStallMs: number;
  private readonly sshKey: Buffer | undefined;
  private readonly tls: TlsIdentity | undefined;
  private readonly busy = new Set<string>();
  private readonly holds: HoldRegistry;
  private readonly merges: RoundMerges;
  private readonly sends = new Map<string, AbortController>();
  private readonly incomingImports = new Map<string, { bytes: number }>();
  /** When each checkpoint was imported and verified here, for FRESH_IMPORT_MS. */
  private readonly importedAt = new Map<string, number>();
  /**
   * When each checkpoint id was last deleted here. An import that began before its id was deleted is
   * discarded when it completes: a rollback deletes the target's copy while the last bytes may still be
   * on their way, and the copy must not land afterwards.
   */
  private readonly deletedAt = new Map<string, number>();
  /** Lazy checkpoints whose memory is still, or was, served from here. */
  private readonly pageServers = new Map<string, { server: PageServer; work: BackgroundWork<'serving', 'served'> }>();
  /** Restores whose memory is still, or was, loaded lazily from this node's images, by checkpoint. */
  private readonly memoryLoads = new Map<string, BackgroundWork<'loading', 'loaded'>>();
  /** Recent restore wall times per runtime: what a controller expects a restore here to cost. */
  private readonly restoreTimes = new Map<RuntimeName, number[]>();
  private capabilities?: Promise<NodeCapabilities>;

  constructor(opts: AgentOptions) {
    this.node = opts.node;
    this.store = opts.store;
    this.criu = opts.criu ?? 'criu';
    this.transferStallMs = opts.transferStallMs ?? 30_000;
    this.sshKey = opts.sshKey;
    this.tls = opts.tls;
    this.holds = new HoldRegistry(opts.holdsFile);
    this.merges = new RoundMerges(path.join(opts.store.root, 'merging'));
    for (const d of opts.drivers) this.drivers.set(d.name, d);
  }

  /** Removes the merges of pre-copy rounds an earlier run of this agent left (their rounds restore without). */
  clearMerges(): Promise<void> {
    return this.merges.clear();
  }

  /** Thaws containers a killed earlier run of this agent held frozen, for a coordinated checkpoint or a dump. */
  async recoverHolds(): Promise<string[]> {
    const thawed = await this.holds.recover(async (c) => {
      const driver = this.drivers.get(c.runtime);
      const container = await driver?.find(c.id);
      if (container && driver?.thaw) await driver.thaw(container);
    });
    return thawed.map((c) => c.name);
  }

  /** Probed once and cached; `refresh` re-probes (a runtime may have been started since). */
  probe(refresh = false): Promise<NodeCapabilities> {
    if (refresh || !this.capabilities) {
      this.capabilities = probeNode([...this.drivers.values()], this.criu, this.node);
      this.capabilities.catch(() => (this.capabilities = undefined));
    }
    return this.capabilities;
  }

  driver(runtime: RuntimeName): RuntimeDriver {
    const d = this.drivers.get(runtime);
    if (!d) {
      throw new FerryError('bad_request', `runtime '${runtime}' is not enabled on this agent`, {
        hint: `enabled runtimes: ${[...this.drivers.keys()].join(', ')}`,
        details: { field: 'runtime' },
      });
    }
    return d;
  }

  async listContainers(runtime?: RuntimeName): Promise<ContainerInfo[]> {
    const drivers = runtime ? [this.driver(runtime)] : [...this.drivers.values()];
    const lists = await Promise.all(
      drivers.map(async (d) => {
        // An absent runtime (dockerd not started) must not hide the containers of the others.
        if (!runtime && !(await d.status()).available) return [];
        return d.list();
      }),
    );
    return lists.flat();
  }

  async findContainer(runtime: RuntimeName, ref: string): Promise<ContainerInfo> {
    assertContainerRef(ref);
    const found = await this.driver(runtime).find(ref);
    if (!found) {
      throw new FerryError('container_not_found', `no ${runtime} container '${ref}' on node ${this.node}`, {
        hint: 'list containers with `ferry ls`',
        details: { field: 'container' },
      });
    }
    return found;
  }

  /** 404 image_not_found unless the runtime has the image; runc carries its rootfs and always has it. */
  async assertImage(runtime: RuntimeName, ref: string): Promise<void> {
    const driver = this.driver(runtime);
    if (!driver.hasImage || (await driver.hasImage(ref))) return;
    throw new FerryError('image_not_found', `${runtime} on node ${this.node} has no image ${ref}`, {
      hint: `copy it here with the same id (${runtime} save on the source, ${runtime} load here)`,
    });
  }

  /** A stopped twin of another node's container, for an in-place restore (podman-twin.ts). */
  async prepareContainer(runtime: RuntimeName, p: PrepareParams): Promise<ContainerInfo> {
    assertContainerRef(p.name, 'name');
    const driver = this.driver(runtime);
    if (!driver.prepare) {
      throw new FerryError('unsupported', `${runtime} containers cannot be prepared for an in-place restore`, {
        hint: 'migrate with a regular checkpoint',
      });
    }
    if (await driver.find(p.name)) {
      throw new FerryError('conflict', `${runtime} on node ${this.node} already has a container named ${p.name}`, {
        hint: 'remove it first',
        details: { field: 'name' },
      });
    }
    return driver.prepare(p);
  }

  /** Freezes the containers together (a coordinated checkpoint's cut); see holds.ts. */
  async hold(p: HoldParams): Promise<Hold> {
    const targets = await Promise.all(
      p.containers.map(async (c) => ({ driver: this.driver(c.runtime), container: await this.findContainer(c.runtime, c.container) })),
    );
    const notRunning = targets.find((t) => t.container.state !== 'running');
    if (notRunning) {
      throw new FerryError('container_not_running', `${notRunning.container.name} is ${notRunning.container.state}, not running`, {
        hint: 'only running containers can be held for a coordinated checkpoint',
      });
    }
    return this.holds.hold(targets, p.ttlMs);
  }

  releaseHold(id: string, opts: { kill?: boolean } = {}): Promise<Hold> {
    return this.holds.release(id, opts);
  }

  /** Thaws whatever coordinated checkpoints still hold: an agent going away must not leave workloads frozen. */
  releaseAllHolds(): Promise<void> {
    return this.holds.releaseAll();
  }

  /** Stops and removes a container (a migration's source once the target runs); absent is not an error. */
  async removeContainer(runtime: RuntimeName, ref: string): Promise<void> {
    assertContainerRef(ref);
    const found = await this.driver(runtime).find(ref);
    if (!found) return;
    await this.exclusive(`${runtime}/${found.id}`, `an operation on ${found.name}`, () => this.driver(runtime).remove(found.id));
  }

  private async exclusive<T>(key: string, what: string, fn: () => Promise<T>): Promise<T> {
    if (this.busy.has(key)) throw new FerryError('conflict', `${what} is already in progress`, { hint: 'wait for it to finish' });
    this.busy.add(key);
    try {
      return await fn();
    } finally {
      this.busy.delete(key);
    }
  }

  async checkpoint(p: CheckpointParams): Promise<Manifest> {
    const container = await this.findContainer(p.runtime, p.container);
    const id = p.id ? assertCheckpointId(p.id) : newCheckpointId();
    if (p.parent) await this.store.get(assertCheckpointId(p.parent, 'parent'));
    const lazy = p.lazy ? await this.lazyPort(p) : undefined;
    return this.exclusive(`${p.runtime}/${container.id}`, `an operation on ${container.name}`, async () => {
      const [caps, pending] = await Promise.all([this.probe(), this.store.begin(id, { encode: !p.transient && !lazy })]);
      const t0 = performance.now();
      let pageServer: PageServer | undefined;
      // CRIU reads the parent's images plain: an encoded chain is decoded aside for the dump (plain-view.ts).
      let parentView: PlainView | undefined;
      try {
        if (p.parent) parentView = await this.store.plainView(await this.store.chain(p.parent));
        const dumped = { runtime: p.runtime, id: container.id, name: container.name };
        const outcome = await this.holds.whileDumping(dumped, () =>
          this.driver(p.runtime).checkpoint({
            container,
            dir: pending.dir,
            leaveRunning: p.leaveRunning ?? false,
            onWritten: (rel) => pending.prepare(rel),
            ...(this.holds.isHeld(p.runtime, container.id) ? { heldFrozen: true } : {}),
            ...(p.preDump ? { preDump: true } : {}),
            ...(p.parent ? { parentPath: this.parentPathFor(p.parent, pending.dir, parentView) } : {}),
            ...(lazy ? { lazy } : {}),
            ...(p.inPlace ? { inPlace: true } : {}),
          }),
        );
        pageServer = outcome.pageServer;
        if (p.parent && parentView?.decoded) await this.store.relinkParent(pending.dir, p.parent);
        const manifest = await pending.seal({
          id,
          kind: p.preDump ? 'pre-dump' : 'full',
          createdAt: new Date().toISOString(),
          node: this.node,
          container: {
            id: container.id,
            name: container.name,
            runtime: p.runtime,
            ...(container.image ? { image: container.image } : {}),
          },
          criuVersion: caps.criu.version ?? 'unknown',
          leaveRunning: p.preDump ? true : (p.leaveRunning ?? false),
          ...(p.parent ? { parent: p.parent } : {}),
          ...(outcome.stats ? { stats: outcome.stats } : {}),
          timings: { ...outcome.phases, checkpointMs: since(t0) },
          runtimeMeta: outcome.runtimeMeta,
          ...(pageServer ? { lazyPages: { port: pageServer.port } } : {}),
          ...(p.transient ? { transient: true } : {}),
        });
        if (pageServer) this.trackPageServer(id, pageServer);
        return manifest;
      } catch (err) {
        // Serving memory of a checkpoint that was not kept would help nobody: the container runs on.
        await pageServer?.stop();
        await pending.abort();
        throw await this.withContainerState(err, p.runtime, container);
      } finally {
        await parentView?.dispose();
      }
    });
  }

  /** CRIU's --prev-images-dir, relative to the new images: the store's parent, or its decoded copy. */
  private parentPathFor(parent: string, pendingDir: string, view: PlainView | undefined): string {
    if (!view?.decoded) return this.store.parentPathFor(parent);
    return path.relative(path.join(pendingDir, 'checkpoint'), path.join(view.dirOf(parent), 'checkpoint'));
  }

  /** Post-copy needs runc (podman and docker have no lazy restore) and userfaultfd on this kernel. */
  private async lazyPort(p: CheckpointParams): Promise<{ port: number }> {
    if (p.runtime !== 'runc') {
      throw new FerryError('unsupported', `lazy (post-copy) checkpoints need runc; ${p.runtime} has no lazy restore`, {
        hint: 'use a full checkpoint',
        details: { field: 'lazy' },
      });
    }
    if (p.preDump || p.leaveRunning) {
      throw new FerryError('bad_request', 'a lazy checkpoint stops the container: drop preDump and leaveRunning', {
        details: { field: 'lazy' },
      });
    }
    if (!(await this.probe()).criu.lazyPages) {
      throw new FerryError('unsupported', `this node's kernel has no userfaultfd for CRIU's lazy pages`, {
        hint: "check 'criu check --feature uffd-noncoop'; use a full checkpoint",
        details: { field: 'lazy' },
      });
    }
    return { port: await freePort() };
  }

  private trackPageServer(id: string, server: PageServer): void {
    this.pageServers.set(id, { server, work: new BackgroundWork(server.served, 'serving', 'served') });
  }

  /** Where a lazy checkpoint's page server stands; waits up to waitMs for it to stop serving. */
  async pageServerState(id: string, waitMs = 0): Promise<PageServerState> {
    await this.store.get(assertCheckpointId(id));
    return (await this.pageServers.get(id)?.work.stateAfter(waitMs)) ?? { state: 'unknown' };
  }

  /** Where the lazy loading of a checkpoint's restored memory stands; waits up to waitMs for it to end. */
  async memoryLoadState(id: string, waitMs = 0): Promise<MemoryLoadState> {
    await this.store.get(assertCheckpointId(id));
    return (await this.memoryLoads.get(id)?.stateAfter(waitMs)) ?? { state: 'unknown' };
  }

  /** A failed checkpoint reports whether the container still runs, so nobody has to guess. */
  private async withContainerState(err: unknown, runtime: RuntimeName, container: ContainerInfo): Promise<unknown> {
    if (!(err instanceof FerryError)) return err;
    const now = await this.driver(runtime)
      .find(container.id)
      .catch(() => undefined);
    return new FerryError(err.code, err.message, {
      ...(err.hint ? { hint: err.hint } : {}),
      ...(err.criuLog ? { criuLog: err.criuLog } : {}),
      details: { ...err.details, containerState: now?.state ?? 'gone' },
      cause: err,
    });
  }

  async restore(checkpointId: string, p: RestoreParams = {}): Promise<RestoreResult> {
    assertCheckpointId(checkpointId);
    if (p.name) assertContainerRef(p.name, 'name');
    if (p.into) assertContainerRef(p.into, 'into');
    return this.exclusive(`restore/${checkpointId}`, `a restore of ${checkpointId}`, async () => {
      const t0 = performance.now();
      // The chain's manifests, read once: for the checks, the plain view and the verification.
      const chain = await this.store.chain(checkpointId);
      const manifest = chain[0] as Manifest;
      if (manifest.kind !== 'full') {
        throw new FerryError('bad_request', `checkpoint ${checkpointId} is a memory pre-dump and cannot be restored alone`, {
          hint: 'restore a full checkpoint whose parent chain includes it',
        });
      }
      const runtime = manifest.container.runtime;
      if (p.runtime && p.runtime !== runtime) {
        throw new FerryError(
          'bad_request',
          `checkpoint ${checkpointId} was taken with ${runtime}; it cannot be restored with ${p.runtime}`,
          {
            details: { field: 'runtime' },
          },
        );
      }
      if (Boolean(manifest.lazyPages) !== Boolean(p.pageServer)) {
        throw new FerryError(
          'bad_request',
          manifest.lazyPages
            ? `checkpoint ${checkpointId} is lazy: its memory is served by ${manifest.node}; say where with pageServer.host`
            : `checkpoint ${checkpointId} holds its memory; pageServer is only for lazy checkpoints`,
          { details: { field: 'pageServer' } },
        );
      }
      if (p.lazyMemory) await this.assertLazyMemory(checkpointId, runtime, manifest);
      // Encoded checkpoints are decoded aside (and checked) first; plain ones are used where they are.
      // Built after every refusal above, so that a refused restore leaves no decoded copy behind.
      const view = await this.store.plainView(chain);
      // The driver may unpack while the images are verified; it restores only once they pass.
      let verifyMs = 0;
      const stale = chain.filter((c) => !this.checkedOnArrival(c));
      const verified = (stale.length ? this.store.verify(checkpointId, stale) : Promise.resolve()).then(() => {
        verifyMs = since(t0);
        return chain;
      });
      verified.catch(() => undefined);
      const merged = await this.fromMergedRounds(chain, view, verified, p.lazyMemory === true);
      const disposeMerged = () => (merged.dir ? rm(merged.dir, { recursive: true, force: true }) : Promise.resolve());
      const outcome = await this.driver(runtime)
        .restore({
          dir: merged.dir ?? view.dirOf(checkpointId),
          ...(p.name ? { name: p.name } : {}),
          runtimeMeta: manifest.runtimeMeta,
          verified,
          ...(p.pageServer && manifest.lazyPages ? { pageServer: { host: p.pageServer.host, port: manifest.lazyPages.port } } : {}),
          ...(p.into ? { into: p.into } : {}),
          ...(p.lazyMemory ? { lazyMemory: true } : {}),
        })
        .catch(async (err: unknown) => {
          await Promise.all([view.dispose(), disposeMerged()]);
          throw err;
        });
      outcome.pagesLoaded?.catch(() => undefined);
      if (p.lazyMemory && outcome.pagesLoaded)
        this.memoryLoads.set(checkpointId, new BackgroundWork(outcome.pagesLoaded, 'loading', 'loaded'));
      // A lazy load reads the images until the last page is in: only then may a decoded copy go.
      const loaded = p.lazyMemory ? (outcome.pagesLoaded ?? Promise.resolve()) : Promise.resolve();
      void loaded.catch(() => undefined).finally(() => Promise.all([view.dispose(), disposeMerged()]));
      const times = this.restoreTimes.get(runtime) ?? [];
      times.push(since(t0));
      this.restoreTimes.set(runtime, times.slice(-RECENT_RESTORES));
      return {
        checkpoint: checkpointId,
        container: outcome.container,
        ...(outcome.stats ? { stats: outcome.stats } : {}),
        timings: { ...outcome.phases, verifyMs, restoreMs: since(t0) },
        ...(merged.merge ? { merge: merged.merge } : {}),
      };
    });
  }

  /**
   * A final dump on pre-copy rounds this agent merged as they arrived (round-merges.ts) restores from the
   * merge: its images laid out without parents, so that with lazyMemory all of memory can load after the
   * container resumed. Anything that stops the merge leaves the chain to restore as it is.
   */
  private async fromMergedRounds(
    chain: Manifest[],
    view: PlainView,
    verified: Promise<unknown>,
    lazy: boolean,
  ): Promise<{ dir?: string; merge?: MergeOutcome }> {
    const [final, tip] = chain as [Manifest, Manifest | undefined];
    if (!tip || view.decoded) return {};
    const merged = await this.merges.take(tip.id);
    if (merged === undefined) return {};
    if (typeof merged === 'string') return { merge: { unmerged: merged } };
    // Nothing is merged from images that fail their check: the restore then fails on it anyway.
    if (
      !(await verified.then(
        () => true,
        () => false,
      ))
    ) {
      await merged.dispose();
      return {};
    }
    const dir = this.merges.restoreDirOf(final.id);
    const t0 = performance.now();
    try {
      await rm(dir, { recursive: true, force: true });
      const done = await merged.finish(view.dirOf(final.id), dir, { lazy });
      return { dir, merge: { ...done, ms: since(t0) } };
    } catch (err) {
      await Promise.all([merged.dispose(), rm(dir, { recursive: true, force: true })]);
      return { merge: { unmerged: `the final dump could not be merged: ${(err as Error).message}` } };
    }
  }

  /** lazyMemory needs runc, a checkpoint that holds its memory, and userfaultfd for CRIU on this node. */
  private async assertLazyMemory(id: string, runtime: RuntimeName, manifest: Manifest): Promise<void> {
    const refuse = (code: 'bad_request' | 'unsupported', message: string, hint: string) =>
      new FerryError(code, message, { hint, details: { field: 'lazyMemory' } });
    if (runtime !== 'runc')
      throw refuse('bad_request', `checkpoint ${id} is ${runtime}'s: lazyMemory is for runc containers`, 'drop lazyMemory');
    if (manifest.lazyPages)
      throw refuse('bad_request', `checkpoint ${id} is lazy already: its memory comes from its page server`, 'drop lazyMemory');
    const caps = await this.probe();
    if (!caps.criu.lazyPages) {
      throw refuse(
        'unsupported',
        `this node's CRIU cannot load memory lazily (${caps.criu.lazyPagesProblem ?? 'no lazy pages'})`,
        'restore without lazyMemory',
      );
    }
  }

  private checkedOnArrival(m: Manifest): boolean {
    const at = this.importedAt.get(m.id);
    return at !== undefined && (m.transient === true || performance.now() - at < FRESH_IMPORT_MS);
  }

  /** Median of the recent restores per runtime, in ms; runtimes without one are absent. */
  recentRestoreMs(): Partial<Record<RuntimeName, number>> {
    const out: Partial<Record<RuntimeName, number>> = {};
    for (const [runtime, times] of this.restoreTimes) {
      const sorted = [...times].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      if (median !== undefined) out[runtime] = median;
    }
    return out;
  }

  listCheckpoints(): Promise<Manifest[]> {
    return this.store.list();
  }

  getCheckpoint(id: string): Promise<Manifest> {
    return this.store.get(assertCheckpointId(id));
  }

  /** Deleting a checkpoint that is being sent ends the send first: the peer then discards its partial copy. */
  async deleteCheckpoint(id: string): Promise<void> {
    assertCheckpointId(id);
    // A load whose container was just removed ends within moments: its daemon sees the process go.
    await this.memoryLoads.get(id)?.stateAfter(DELETE_WAITS_FOR_LOAD_MS);
    if (this.memoryLoads.get(id)?.running) {
      throw new FerryError('conflict', `checkpoint ${id} is still being loaded into the container restored from it`, {
        hint: `delete it once GET /v1/checkpoints/${id}/memory says loaded`,
      });
    }
    this.rememberDeletion(id);
    this.sends.get(id)?.abort(new FerryError('cancelled', `checkpoint ${id} was deleted while it was being sent`));
    // A page server still serving is stopped first: CRIU then lets the container run on here.
    const served = this.pageServers.get(id);
    if (served?.work.running) await served.server.stop();
    this.pageServers.delete(id);
    await this.merges.forget(id);
    return this.store.delete(id);
  }

  async exportCheckpoint(id: string): Promise<Readable> {
    await this.store.verify(assertCheckpointId(id));
    return this.store.exportArchive(id);
  }

  /** One send of a checkpoint at a time: a second would race the first into the peer's import. */
  sendCheckpoint(id: string, peer: Peer): Promise<SendResult> {
    assertCheckpointId(id);
    return this.exclusive(`send/${id}`, `a send of ${id}`, async () => {
      const abort = new AbortController();
      this.sends.set(id, abort);
      try {
        return await sendCheckpoint(this.store, id, peer, {
          stallMs: this.transferStallMs,
          signal: abort.signal,
          ...(this.sshKey ? { sshKey: this.sshKey } : {}),
          ...(this.tls ? { tls: this.tls } : {}),
        });
      } finally {
        this.sends.delete(id);
      }
    });
  }

  private rememberDeletion(id: string): void {
    const now = performance.now();
    // Only imports under way can race a deletion; older entries are forgotten.
    for (const [old, at] of this.deletedAt) if (now - at > DELETION_MEMORY_MS) this.deletedAt.delete(old);
    this.deletedAt.set(id, now);
    this.importedAt.delete(id);
  }

  /**
   * A sender that goes silent (a cut link) fails the import after transferStallMs; nothing is kept. A
   * sender that announced the checkpoint's id can follow how many bytes arrived (incoming()).
   */
  async importCheckpoint(source: Readable, announced?: string): Promise<Manifest> {
    const startedAt = performance.now();
    const progress = { bytes: 0 };
    if (announced) this.incomingImports.set(assertCheckpointId(announced, 'x-ferry-checkpoint'), progress);
    const manifest = await this.receive(source, progress).finally(() => {
      if (announced && this.incomingImports.get(announced) === progress) this.incomingImports.delete(announced);
    });
    if ((this.deletedAt.get(manifest.id) ?? Number.NEGATIVE_INFINITY) >= startedAt) {
      await this.store.delete(manifest.id).catch(() => undefined);
      throw new FerryError('conflict', `checkpoint ${manifest.id} was deleted here while it was arriving; it was discarded`, {
        hint: 'the migration it belonged to was rolled back',
      });
    }
    this.importedAt.set(manifest.id, performance.now());
    this.merges.arrived(manifest, (id) => this.store.dirOf(id));
    return manifest;
  }

  /**
   * Bytes received so far of an announced import still arriving. The sender follows it once everything
   * is on the wire: a slow link can hold megabytes in socket buffers, where the sender sees no progress.
   */
  incoming(id: string): { id: string; receiving: boolean; bytes: number } {
    const p = this.incomingImports.get(assertCheckpointId(id));
    return { id, receiving: Boolean(p), bytes: p?.bytes ?? 0 };
  }

  private async receive(source: Readable, progress: { bytes: number }): Promise<Manifest> {
    const watched = new Transform({
      transform(chunk: Buffer, _enc, done) {
        progress.bytes += chunk.length;
        silent.kick();
        done(null, chunk);
      },
    });
    const silent = watchdog(this.transferStallMs, () =>
      watched.destroy(
        new FerryError('transfer_failed', `the sender went silent for ${this.transferStallMs} ms; the partial checkpoint was discarded`, {
          hint: 'check the link between the nodes and send again',
        }),
      ),
    );
    source.on('error', (err) => watched.destroy(err));
    source.pipe(watched);
    try {
      return await this.store.importArchive(watched);
    } finally {
      silent.stop();
      source.unpipe(watched);
    }
  }
}

export function isRuntimeName(s: string): s is RuntimeName {
  return (RUNTIME_NAMES as readonly string[]).includes(s);
}
