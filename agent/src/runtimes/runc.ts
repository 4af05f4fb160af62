/**
 * runc has no images and no names: a container is an id, a bundle (config.json + rootfs) and a state dir
 * under its root. A Ferry checkpoint therefore carries the bundle's spec and a tar of the whole rootfs, so
 * that it restores into a fresh bundle on any node, under any name.
 */
import type { TlsFiles } from '../tls/identity.js';
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readDumpStats, readRestoreStats } from '../criu/stats.js';
import { relevantCriuLogLines } from '../criu/log.js';
import { FerryError } from '../errors.js';
import { runCommand, type Classifier, type CommandFailure } from './exec.js';
import { bundleFingerprint } from './fingerprint.js';
import { freezeBeforeDump, type Thaw } from './freezer.js';
import { type PageServer, startLazyDump, startLazyPagesDaemon } from './lazy.js';
import { phaseTimer } from '../phases.js';
import {
  type CheckpointOutcome,
  type CheckpointRequest,
  type ContainerInfo,
  type ContainerState,
  labelsField,
  type RestoreOutcome,
  type RestoreRequest,
  type RuntimeDriver,
  type RuntimeStatus,
} from './types.js';

export interface RuncDriverOptions {
  binary?: string;
  /** runc's state root; on Kubernetes nodes the CRI runtime's (e.g. /run/containerd/runc/k8s.io). */
  root?: string;
  /** Where restored containers get their bundles. */
  bundlesDir: string;
  criu?: string;
  /** The agent's mTLS identity: CRIU's page server and lazy-pages daemon speak TLS with it. */
  tls?: TlsFiles;
}

interface RuncListEntry {
  id: string;
  pid: number;
  status: string;
  bundle: string;
  rootfs: string;
  created: string;
  /** The bundle's OCI annotations, from the state file's labels (see stateLabels); absent when none. */
  annotations?: Record<string, string>;
}

interface RuncMeta {
  id: string;
  bundle: string;
  /** The bundle as the dump left it (fingerprint.ts); lets a restore on this node reuse it in place. */
  fingerprint?: string;
}

/** The part of runc's per-container state.json (libcontainer's State) that identifies a live container. */
interface RuncStateFile {
  id: string;
  init_process_pid: number;
  init_process_start: number;
  created: string;
  config: { labels?: string[] };
}

/** runc's default state root when run as root. */
const DEFAULT_ROOT = '/run/runc';

const STATES: Record<string, ContainerState> = {
  running: 'running',
  paused: 'paused',
  stopped: 'stopped',
  created: 'created',
};

export class RuncDriver implements RuntimeDriver {
  readonly name = 'runc' as const;
  private readonly binary: string;
  private readonly opts: RuncDriverOptions;
  private readonly claimedBundles = new Set<string>();

  constructor(opts: RuncDriverOptions) {
    this.opts = opts;
    this.binary = opts.binary ?? 'runc';
  }

  private globalArgs(): string[] {
    const args: string[] = [];
    if (this.opts.root) args.push('--root', this.opts.root);
    if (this.opts.criu) args.push('--criu', this.opts.criu);
    return args;
  }

  private runc(args: string[], classify?: Classifier): Promise<string> {
    return runCommand(this.binary, [...this.globalArgs(), ...args], { classify });
  }

  async status(): Promise<RuntimeStatus> {
    try {
      const out = await this.runc(['--version']);
      return { runtime: 'runc', available: true, version: /runc version (\S+)/.exec(out)?.[1] ?? out.split('\n')[0] };
    } catch (err) {
      return { runtime: 'runc', available: false, reason: `runc does not answer (${(err as Error).message}); run scripts/setup-host.sh` };
    }
  }

  private async entries(): Promise<RuncListEntry[]> {
    const out = await this.runc(['list', '--format', 'json']);
    return (JSON.parse(out || 'null') as RuncListEntry[] | null) ?? [];
  }

  private toInfo(e: RuncListEntry): ContainerInfo {
    return {
      id: e.id,
      name: e.id,
      runtime: 'runc',
      state: STATES[e.status] ?? 'unknown',
      ...(e.pid ? { pid: e.pid } : {}),
      createdAt: e.created,
      bundle: e.bundle,
      ...labelsField(e.annotations),
    };
  }

  async list(): Promise<ContainerInfo[]> {
    return (await this.entries()).map((e) => this.toInfo(e));
  }

  private async findEntry(ref: string): Promise<RuncListEntry | undefined> {
    const all = await this.entries();
    const exact = all.find((e) => e.id === ref);
    if (exact) return exact;
    const byPrefix = all.filter((e) => e.id.startsWith(ref));
    return byPrefix.length === 1 ? byPrefix[0] : undefined;
  }

  async find(ref: string): Promise<ContainerInfo | undefined> {
    const fast = await this.runningFromStateFile(ref);
    if (fast) return fast;
    const e = await this.findEntry(ref);
    return e && this.toInfo(e);
  }

  /**
   * A running container found by exact id without spawning runc: its state.json names the init pid and
   * that process's start time, which must still match /proc (as runc itself checks). Anything less
   * certain returns undefined and the caller asks runc.
   */
  private async runningFromStateFile(id: string): Promise<ContainerInfo | undefined> {
    const stateDir = path.join(this.opts.root ?? DEFAULT_ROOT, id);
    try {
      const st = JSON.parse(await readFile(path.join(stateDir, 'state.json'), 'utf8')) as RuncStateFile;
      const procStat = await readFile(`/proc/${st.init_process_pid}/stat`, 'utf8');
      // Fields after the parenthesised command: state is field 3, start time field 22.
      const fields = procStat.slice(procStat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z' || Number(fields[19]) !== st.init_process_start) return undefined;
      // A created-but-not-started container still has its exec fifo.
      if (
        await stat(path.join(stateDir, 'exec.fifo')).then(
          () => true,
          () => false,
        )
      )
        return undefined;
      const { bundle, annotations } = stateLabels(st.config.labels);
      if (!bundle || st.id !== id) return undefined;
      return {
        id,
        name: id,
        runtime: 'runc',
        state: 'running',
        pid: st.init_process_pid,
        createdAt: st.created,
        bundle,
        ...labelsField(annotations),
      };
    } catch {
      return undefined;
    }
  }

  async checkpoint(req: CheckpointRequest): Promise<CheckpointOutcome> {
    // The caller has just listed the container; asking runc again would cost a process spawn.
    const { id, bundle } = req.container.bundle
      ? { id: req.container.id, bundle: req.container.bundle }
      : await this.state(req.container.id);
    if (req.container.state !== 'running') {
      throw new FerryError('container_not_running', `runc container ${id} is ${req.container.state}, not running`, {
        hint: 'only a running container can be checkpointed',
      });
    }
    const spec = JSON.parse(await readFile(path.join(bundle, 'config.json'), 'utf8')) as { root?: { path?: string } };
    const rootfs = path.resolve(bundle, spec.root?.path ?? 'rootfs');
    const imageDir = path.join(req.dir, 'checkpoint');
    if (req.lazy) return this.lazyCheckpoint(req, { id, bundle, rootfs, imageDir, port: req.lazy.port });
    const workDir = path.join(req.dir, 'work');
    await mkdir(imageDir, { recursive: true });
    const args = ['checkpoint', '--image-path', imageDir, '--work-path', workDir];
    if (req.preDump) args.push('--pre-dump');
    else if (req.leaveRunning) args.push('--leave-running');
    if (req.parentPath) args.push('--parent-path', req.parentPath);
    // A rootfs that is a mount of its own belongs to a runtime that prepared it (containerd, CRI-O) and
    // removes it with the container: never a bundle to restore in place, so it gets no fingerprint.
    const ownRootfs = !req.preDump && !(await isMountPoint(rootfs));
    const timer = phaseTimer();
    const thaw = await this.freezeForDump(req);
    timer.end('freezeMs');
    // Memory-only pre-dumps need no filesystem; a full dump carries the rootfs so it restores anywhere.
    const captureFiles = () =>
      Promise.all([
        copyFile(path.join(bundle, 'config.json'), path.join(req.dir, 'spec.dump')).then(() => req.onWritten?.('spec.dump')),
        req.preDump
          ? undefined
          : runCommand('tar', ['-C', rootfs, '-cf', path.join(req.dir, 'rootfs-diff.tar'), '.']).then(() =>
              req.onWritten?.('rootfs-diff.tar'),
            ),
      ]);
    // A stopping dump ends the container, and under containerd its shim then unmounts the rootfs at once:
    // a tar taken after the dump raced the unmount. Frozen, the files are the state CRIU dumps next, so
    // they are captured first; a leave-running dump stays frozen until after, and captures them then,
    // overlapping the hashing of CRIU's images.
    const captureFirst = !req.preDump && !req.leaveRunning && Boolean(thaw || req.heldFrozen);
    let fingerprint: string | undefined;
    let stats: Awaited<ReturnType<typeof readDumpStats>>;
    try {
      if (captureFirst) {
        await captureFiles();
        timer.end('rootfsMs');
      }
      await this.runc([...args, id], (f) =>
        criuFailure('checkpoint', id, f, path.join(workDir, req.preDump ? 'pre-dump.log' : 'dump.log')),
      );
      timer.end('runcCheckpointMs');

      // CRIU writes its figures and log to the work dir; the checkpoint keeps them where podman would.
      const moved = await Promise.all(
        [
          ['stats-dump', 'stats-dump'],
          [req.preDump ? 'pre-dump.log' : 'dump.log', 'dump.log'],
        ].map(async ([from, to]) =>
          (await moveIfPresent(path.join(workDir, from as string), path.join(req.dir, to as string))) ? to : undefined,
        ),
      );
      [stats] = await Promise.all([readDumpStats(path.join(req.dir, 'stats-dump')), rm(workDir, { recursive: true, force: true })]);
      // Each piece goes to the store as soon as it is final: its hashing and fsync overlap the rest.
      for (const rel of ['checkpoint', ...moved]) if (rel) req.onWritten?.(rel);
      // The fingerprint comes after the dump, since CRIU itself touches the tree (a directory it makes and
      // removes in /tmp changes that one's times). It lets a later restore on this node reuse the bundle.
      [fingerprint] = await Promise.all([
        ownRootfs ? bundleFingerprint(bundle, rootfs) : undefined,
        captureFirst ? undefined : captureFiles(),
      ]);
      timer.end('afterDumpMs');
    } finally {
      await thaw?.();
    }
    const meta: RuncMeta = { id, bundle, ...(fingerprint ? { fingerprint } : {}) };
    await writeFile(
      path.join(req.dir, 'config.dump'),
      JSON.stringify({ runtime: 'runc', ...meta, rootfs, created: req.container.createdAt }),
    );
    return { ...(stats ? { stats } : {}), runtimeMeta: { ...meta }, phases: timer.phases };
  }

  /** See freezeBeforeDump; a pre-dump is not frozen first, and a held container is frozen already. */
  private async freezeForDump(req: CheckpointRequest): Promise<(() => Promise<void>) | undefined> {
    if (req.preDump || req.heldFrozen) return undefined;
    const { pid } = req.container;
    if (!pid) {
      // No pid to find the cgroup by: runc's own pause keeps a leave-running dump consistent all the same.
      return req.leaveRunning ? this.freeze(req.container) : undefined;
    }
    return freezeBeforeDump(pid, req.container.name, req.leaveRunning);
  }

  /**
   * Post-copy's dump: the images but memory, written while CRIU holds the container frozen, so the rootfs
   * tar taken then is consistent. CRIU's work dir lives outside the checkpoint: it logs there until the
   * memory is served, long after the store sealed and hashed the checkpoint.
   */
  private async lazyCheckpoint(
    req: CheckpointRequest,
    c: { id: string; bundle: string; rootfs: string; imageDir: string; port: number },
  ): Promise<CheckpointOutcome> {
    if (req.preDump || req.leaveRunning) {
      throw new FerryError('bad_request', 'a lazy (post-copy) checkpoint stops the container', {
        details: { field: 'lazy' },
      });
    }
    const workDir = path.join(this.opts.bundlesDir, `.lazy-dump-${c.id}-${randomBytes(3).toString('hex')}`);
    await Promise.all([mkdir(c.imageDir, { recursive: true }), mkdir(workDir, { recursive: true })]);
    let server: PageServer;
    try {
      server = await startLazyDump({
        runc: this.binary,
        globalArgs: this.globalArgs(),
        id: c.id,
        imageDir: c.imageDir,
        workDir,
        port: c.port,
        ...(req.parentPath ? { parentPath: req.parentPath } : {}),
        ...(this.opts.tls ? { tls: this.opts.tls } : {}),
      });
    } catch (err) {
      await rm(workDir, { recursive: true, force: true });
      throw err;
    }
    void server.served.catch(() => undefined).finally(() => rm(workDir, { recursive: true, force: true }));
    try {
      req.onWritten?.('checkpoint');
      await Promise.all([
        copyFile(path.join(c.bundle, 'config.json'), path.join(req.dir, 'spec.dump')),
        runCommand('tar', ['-C', c.rootfs, '-cf', path.join(req.dir, 'rootfs-diff.tar'), '.']),
      ]);
      const meta: RuncMeta = { id: c.id, bundle: c.bundle };
      await writeFile(
        path.join(req.dir, 'config.dump'),
        JSON.stringify({ runtime: 'runc', ...meta, rootfs: c.rootfs, created: req.container.createdAt }),
      );
      return { runtimeMeta: { ...meta }, pageServer: server };
    } catch (err) {
      await server.stop();
      throw err;
    }
  }

  async restore(req: RestoreRequest): Promise<RestoreOutcome> {
    const original = String(req.runtimeMeta.id ?? 'restored');
    const name = req.name ?? ((await this.exists(original)) ? `${original}-restored-${randomBytes(3).toString('hex')}` : original);
    if (await this.exists(name)) {
      throw new FerryError('conflict', `a runc container named ${name} already exists`, { hint: 'choose another name' });
    }
    // The checkpoint directory stays untouched (its manifest checksums must keep holding). On the node that
    // took it, a bundle nobody uses and nobody touched since the dump is restored in place, as runc does.
    const inPlace = await this.untouchedOriginalBundle(req.runtimeMeta);
    // Two restores racing for one original bundle: the second sees it claimed and unpacks a copy.
    if (inPlace) this.claimedBundles.add(inPlace);
    const bundle = inPlace ?? path.join(this.opts.bundlesDir, name);
    const workDir = path.join(this.opts.bundlesDir, `.restore-${name}`);
    const pidFile = path.join(workDir, 'pid');
    let daemon: Awaited<ReturnType<typeof startLazyPagesDaemon>> | undefined;
    const timer = phaseTimer();
    try {
      await rm(workDir, { recursive: true, force: true });
      await Promise.all([inPlace ? undefined : this.prepareBundle(req.dir, bundle), mkdir(workDir, { recursive: true })]);
      await req.verified;
      timer.end('bundleMs');
      // Post-copy pulls memory from the source's page server; lazyMemory loads it from these images.
      daemon =
        req.pageServer || req.lazyMemory
          ? await startLazyPagesDaemon({
              criu: this.opts.criu ?? 'criu',
              imageDir: path.join(req.dir, 'checkpoint'),
              workDir,
              ...(req.pageServer ? { source: req.pageServer } : {}),
              ...(this.opts.tls ? { tls: this.opts.tls } : {}),
            })
          : undefined;
      if (daemon) timer.end('lazyDaemonMs');
      await this.runc(
        [
          'restore',
          ...(daemon ? ['--lazy-pages'] : []),
          '--detach',
          '--pid-file',
          pidFile,
          '--image-path',
          path.join(req.dir, 'checkpoint'),
          '--work-path',
          workDir,
          '--bundle',
          bundle,
          name,
        ],
        (f) => criuFailure('restore', name, f, path.join(workDir, 'restore.log')),
      );
      timer.end('runcRestoreMs');
    } catch (err) {
      daemon?.stop();
      // A lazy restore usually fails on the daemon's side (the page server out of reach): its log says why.
      const daemonFailure = await daemon?.done.then(
        () => undefined,
        (e: unknown) => e,
      );
      // Only a bundle Ferry made is Ferry's to delete; the original stays as the user left it.
      if (!inPlace) await rm(bundle, { recursive: true, force: true });
      await rm(workDir, { recursive: true, force: true });
      if (err instanceof FerryError && daemonFailure instanceof FerryError && daemonFailure.criuLog?.length) {
        throw new FerryError(err.code, `${err.message}; ${daemonFailure.message}`, {
          ...(err.hint ? { hint: err.hint } : {}),
          criuLog: [...daemonFailure.criuLog, ...(err.criuLog ?? [])],
        });
      }
      throw err;
    } finally {
      // Once restored, runc's state dir names the bundle, and bundleInUse sees it.
      if (inPlace) this.claimedBundles.delete(inPlace);
    }
    const [stats, pid, annotations] = await Promise.all([
      readRestoreStats(path.join(workDir, 'stats-restore')),
      readFile(pidFile, 'utf8'),
      // The bundle's annotations as runc now keeps them, so that find() and list() report the same.
      readFile(path.join(this.opts.root ?? DEFAULT_ROOT, name, 'state.json'), 'utf8').then(
        (raw) => stateLabels((JSON.parse(raw) as RuncStateFile).config.labels).annotations,
        () => undefined,
      ),
    ]);
    // The lazy-pages daemon keeps its socket and log in the work dir until the last page has arrived.
    const pagesLoaded = daemon?.done.finally(() => rm(workDir, { recursive: true, force: true }));
    // Nobody waits for the work dir to go; a later restore under this name removes it first anyway.
    if (!pagesLoaded) void rm(workDir, { recursive: true, force: true }).catch(() => undefined);
    // A detached restore that returned 0 is running; its pid file saves listing every container again.
    const container: ContainerInfo = {
      id: name,
      name,
      runtime: 'runc',
      state: 'running',
      pid: Number(pid.trim()),
      bundle,
      ...labelsField(annotations),
    };
    return { container, ...(stats ? { stats } : {}), ...(pagesLoaded ? { pagesLoaded } : {}), phases: timer.phases };
  }

  /**
   * The checkpoint's original bundle, when it is on this node, no runc container (running or stopped)
   * uses it, and its fingerprint still equals the one taken at the dump; else undefined.
   */
  private async untouchedOriginalBundle(runtimeMeta: Record<string, unknown>): Promise<string | undefined> {
    const { bundle, fingerprint } = runtimeMeta as Partial<RuncMeta>;
    if (!bundle || !fingerprint || this.claimedBundles.has(bundle)) return undefined;
    try {
      const spec = JSON.parse(await readFile(path.join(bundle, 'config.json'), 'utf8')) as { root?: { path?: string } };
      const [used, now] = await Promise.all([
        this.bundleInUse(bundle),
        bundleFingerprint(bundle, path.resolve(bundle, spec.root?.path ?? 'rootfs')),
      ]);
      return !used && now === fingerprint ? bundle : undefined;
    } catch {
      return undefined;
    }
  }

  /** runc's state dirs name their bundle in a label; reading them needs no runc process. */
  private async bundleInUse(bundle: string): Promise<boolean> {
    const root = this.opts.root ?? DEFAULT_ROOT;
    const ids = await readdir(root).catch(() => [] as string[]);
    const labels = await Promise.all(
      ids.map((id) =>
        readFile(path.join(root, id, 'state.json'), 'utf8').then(
          (raw) => (JSON.parse(raw) as RuncStateFile).config.labels ?? [],
          // A state dir without a readable state.json is a container being created or deleted: assume in use.
          () => [`bundle=${bundle}`],
        ),
      ),
    );
    return labels.some((l) => l.includes(`bundle=${bundle}`));
  }

  /** runc keeps one state directory per container id under its root: checking it needs no process. */
  private async exists(id: string): Promise<boolean> {
    return stat(path.join(this.opts.root ?? DEFAULT_ROOT, id)).then(
      () => true,
      () => false,
    );
  }

  private async state(id: string): Promise<{ id: string; bundle: string }> {
    const out = await this.runc(['state', id], (f) =>
      /does not exist/.test(f.stderr) ? new FerryError('container_not_found', `runc container ${id} does not exist`) : undefined,
    );
    const st = JSON.parse(out) as { id: string; bundle: string };
    return { id: st.id, bundle: st.bundle };
  }

  /** A fresh bundle: the checkpoint's spec with its rootfs unpacked beside it. */
  private async prepareBundle(dir: string, bundle: string): Promise<void> {
    // A leftover of an interrupted restore is swept; the common case pays for no recursive rm.
    await mkdir(path.dirname(bundle), { recursive: true });
    await mkdir(bundle).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
      await rm(bundle, { recursive: true, force: true });
      await mkdir(bundle);
    });
    await mkdir(path.join(bundle, 'rootfs'));
    const [spec] = await Promise.all([
      readFile(path.join(dir, 'spec.dump'), 'utf8').then((raw) => JSON.parse(raw) as { root?: { path?: string } }),
      runCommand('tar', ['-C', path.join(bundle, 'rootfs'), '-xf', path.join(dir, 'rootfs-diff.tar')]),
    ]);
    spec.root = { ...spec.root, path: 'rootfs' };
    await writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
  }

  async exec(ref: string, argv: string[]): Promise<string> {
    return this.runc(['exec', ref, ...argv]);
  }

  /** runc's own pause (the cgroup freezer), which its checkpoint accepts and leaves paused. */
  async freeze(container: ContainerInfo): Promise<Thaw> {
    await this.runc(['pause', container.id]);
    return async (opts) => {
      // runc thaws a paused container it sends SIGKILL to, so that the signal lands (cgroup v1 freezer);
      // the init dies, and its PID namespace with it, before running anything more.
      if (opts?.kill) await this.runc(['kill', container.id, 'KILL']);
      else await this.runc(['resume', container.id]);
    };
  }

  /** Resumes unconditionally: find()'s fast path reads runc's state file, which does not say "paused". */
  async thaw(container: ContainerInfo): Promise<void> {
    await this.runc(['resume', container.id]);
  }

  async remove(ref: string): Promise<void> {
    const entry = await this.findEntry(ref);
    if (!entry) return;
    await this.runc(['delete', '--force', entry.id]);
    // Only bundles Ferry created are Ferry's to delete.
    if (path.dirname(entry.bundle) === path.resolve(this.opts.bundlesDir)) await rm(entry.bundle, { recursive: true, force: true });
  }
}

/**
 * runc keeps a container's OCI annotations in its state file as "key=value" labels, beside its own
 * "bundle=<dir>" (appended last). Split as `runc list` splits them (libcontainer/utils.Annotations), so that
 * find()'s fast path and list() agree.
 */
function stateLabels(labels: string[] = []): { bundle?: string; annotations: Record<string, string> } {
  let bundle: string | undefined;
  const annotations: [string, string][] = [];
  for (const label of labels) {
    const eq = label.indexOf('=');
    if (eq < 0) continue;
    const key = label.slice(0, eq);
    const value = label.slice(eq + 1);
    if (key === 'bundle') bundle = value;
    else annotations.push([key, value]);
  }
  // fromEntries, as JSON.parse does for runc list, makes even a "__proto__" key an own property.
  return { bundle, annotations: Object.fromEntries(annotations) };
}

/** True when dir is the root of a mount (its device differs from its parent's), as a runtime's rootfs is. */
async function isMountPoint(dir: string): Promise<boolean> {
  const [own, parent] = await Promise.all([stat(dir), stat(path.dirname(dir))]);
  return own.dev !== parent.dev;
}

/** Renames from to to; true when from existed. */
async function moveIfPresent(from: string, to: string): Promise<boolean> {
  return rename(from, to).then(
    () => true,
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
      return false;
    },
  );
}

async function criuFailure(op: string, id: string, f: CommandFailure, logPath: string): Promise<FerryError> {
  return new FerryError('criu_failed', `runc ${op} of ${id} failed: ${lastLine(f.stderr)}`, {
    hint: `the container was left as it was; see criuLog, and check 'criu check' on this node`,
    criuLog: await relevantCriuLogLines(logPath),
  });
}

function lastLine(s: string): string {
  return s.split('\n').filter(Boolean).pop() ?? 'no output';
}
