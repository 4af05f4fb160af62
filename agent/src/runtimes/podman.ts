/**
 * podman exports a checkpoint as one archive whose layout (checkpoint/, config.dump, spec.dump,
 * rootfs-diff.tar, stats-dump, network.status, ...) is already Ferry's checkpoint layout. The driver unpacks
 * that archive into the store's directory and packs it back for `restore --import`, so what the store keeps
 * is exactly what podman wrote and any podman can restore it.
 *
 * CRIU's figures: a dump's come from the stats-dump file in the export. podman deletes stats-restore after a
 * restore (only --keep spares it, and that also keeps a second copy of every image in the new container's
 * directory), so a restore's come from `--print-stats`, which is that file's content re-encoded as JSON.
 * CRIU's logs live in the container's userdata directory (`podman inspect` StaticDir): dump.log and
 * restore.log, deleted on success, kept on failure.
 */
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, link, mkdtemp, readdir, readFile, readlink, rename, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { relevantCriuLogLines } from '../criu/log.js';
import { type CriuDumpStats, type CriuRestoreStats, PAGE_SIZE, readDumpStats } from '../criu/stats.js';
import { FerryError, isFerryError } from '../errors.js';
import { pathExists } from '../store/files.js';
import { MANIFEST_FILE } from '../store/manifest.js';
import { runCommand, type Classifier, type CommandFailure } from './exec.js';
import { freezeBeforeDump, holdFrozen, type Thaw, thawPid } from './freezer.js';
import { linkOrCopyTree, packUpperDir, unpackUpperDir } from './overlay.js';
import { twinCreateArgs } from './podman-twin.js';
import {
  type CheckpointOutcome,
  type CheckpointRequest,
  type ContainerInfo,
  type ContainerState,
  labelsField,
  type PrepareRequest,
  type RestoreOutcome,
  type RestoreRequest,
  type RuntimeDriver,
  type RuntimeStatus,
} from './types.js';

export interface PodmanDriverOptions {
  binary?: string;
  /** Global flags put before every subcommand, e.g. `podmanStoreArgs(root)` for a private store. */
  extraArgs?: string[];
}

/**
 * The global flags that give podman a store of its own (several nodes on one machine), as separate from the
 * host's default store as another machine's would be.
 *
 * `--root` alone is not enough: runroot (containers/storage's mount counts and locks) and tmpdir (libpod's
 * per-boot state: the `alive` file whose absence means "rebooted", exit files, conmon sockets, the events
 * log) would stay the default store's, and two stores sharing them corrupt each other. Both belong on
 * /run, a tmpfs on a normal host, because podman and containers/storage detect a reboot by their contents
 * vanishing; a runroot on disk would outlive a reboot and leave containers "running" and layers "mounted".
 * So the default runroot is derived from the root, stably: podman records runroot and tmpdir in the
 * store's database and refuses ("database configuration mismatch") to open it with others. That record is
 * also why `podman --root <dir> ps` alone finds a node's containers.
 */
export function podmanStoreArgs(root: string, runroot?: string): string[] {
  const graphRoot = path.resolve(root);
  const runRoot = runroot ? path.resolve(runroot) : defaultPodmanRunroot(graphRoot);
  return ['--root', graphRoot, '--runroot', runRoot, '--tmpdir', path.join(runRoot, 'libpod')];
}

export function defaultPodmanRunroot(root: string): string {
  const id = createHash('sha256').update(path.resolve(root)).digest('hex').slice(0, 16);
  return path.join('/run/ferry/podman', id);
}

/** The fields Ferry uses from `podman ps -a --format json`. */
interface PsEntry {
  Id: string;
  Names: string[];
  State: string;
  Pid: number;
  Image: string;
  ImageID: string;
  /** Unix seconds. */
  Created: number;
  /** The container's labels (its image's included); null when there are none. */
  Labels: Record<string, string> | null;
}

/** The fields Ferry uses from `podman container inspect`. */
interface InspectEntry {
  Id: string;
  Name: string;
  State: { Status: string; Pid: number };
  ImageName: string;
  /** The image's id. */
  Image: string;
  Created: string;
  Config: { Labels?: Record<string, string> | null; CreateCommand?: string[] | null };
  /** The container's userdata directory: CRIU's work dir, where dump.log and restore.log are written. */
  StaticDir: string;
  /** overlay: UpperDir is the container's writable layer. */
  GraphDriver?: { Data?: Record<string, string> | null };
}

/** What `podman container checkpoint --print-stats` prints (CRIU's times in microseconds, zeros omitted). */
interface CheckpointReport {
  container_statistics?: {
    criu_statistics?: Partial<
      Record<'freezing_time' | 'frozen_time' | 'memdump_time' | 'memwrite_time' | 'pages_scanned' | 'pages_written', number>
    >;
  }[];
}

/** What `podman container restore --print-stats` prints (CRIU's times in microseconds, zeros omitted). */
interface RestoreReport {
  container_statistics?: {
    Id: string;
    criu_statistics?: Partial<Record<'pages_compared' | 'pages_skipped_cow' | 'forking_time' | 'restore_time' | 'pages_restored', number>>;
  }[];
}

/** podman's container states; 'configured' is created in podman's database but not yet in the runtime. */
const STATES: Record<string, ContainerState> = {
  running: 'running',
  paused: 'paused',
  created: 'created',
  configured: 'created',
  exited: 'stopped',
  stopped: 'stopped',
};

const CRIU_LOG_TAIL = 20;
/** runtimeMeta.layout of an in-place checkpoint (checkpointInPlace). */
const IN_PLACE = 'in-place';
/** CRIU's images, in the store's directory as in the container's. */
const IMAGES = 'checkpoint';
/** An in-place checkpoint's writable layer: the overlay upper directory, whiteouts and all. */
const UPPER_ARCHIVE = 'rootfs-upper.tar';
/** What podman keeps next to CRIU's images in the container's directory and reads back on restore. */
const USERDATA_FILES = ['devshm-checkpoint.tar', 'network.status'];

export class PodmanDriver implements RuntimeDriver {
  readonly name = 'podman' as const;
  private readonly binary: string;
  private readonly extraArgs: string[];

  constructor(opts: PodmanDriverOptions = {}) {
    this.binary = opts.binary ?? 'podman';
    this.extraArgs = opts.extraArgs ?? [];
  }

  private podman(args: string[], classify?: Classifier): Promise<string> {
    return runCommand(this.binary, [...this.extraArgs, ...args], { classify });
  }

  async status(): Promise<RuntimeStatus> {
    try {
      const version = (await this.podman(['version', '--format', '{{.Client.Version}}'])).trim();
      return { runtime: 'podman', available: true, version };
    } catch (err) {
      const reason =
        isFerryError(err) && err.code === 'runtime_unavailable'
          ? `podman is not installed; run scripts/setup-host.sh`
          : `podman does not answer (${(err as Error).message}); run scripts/setup-host.sh`;
      return { runtime: 'podman', available: false, reason };
    }
  }

  async list(): Promise<ContainerInfo[]> {
    const entries = (JSON.parse((await this.podman(['ps', '-a', '--format', 'json'])) || 'null') as PsEntry[] | null) ?? [];
    return entries.map((e) => {
      const state = STATES[e.State] ?? 'unknown';
      return {
        id: e.Id,
        name: e.Names[0] ?? e.Id,
        runtime: 'podman' as const,
        state,
        // podman keeps reporting the last pid of a stopped container.
        ...(state === 'running' && e.Pid ? { pid: e.Pid } : {}),
        image: e.Image,
        imageId: e.ImageID,
        createdAt: new Date(e.Created * 1000).toISOString(),
        ...labelsField(e.Labels),
      };
    });
  }

  async find(ref: string): Promise<ContainerInfo | undefined> {
    const e = await this.inspect(ref).catch((err: unknown) => {
      if (isFerryError(err) && err.code === 'container_not_found') return undefined;
      throw err;
    });
    if (!e) return undefined;
    const state = STATES[e.State.Status] ?? 'unknown';
    return {
      id: e.Id,
      name: e.Name,
      runtime: 'podman',
      state,
      ...(state === 'running' && e.State.Pid ? { pid: e.State.Pid } : {}),
      image: e.ImageName,
      imageId: e.Image,
      createdAt: e.Created,
      ...labelsField(e.Config.Labels),
      ...(e.Config.CreateCommand?.length ? { createCommand: e.Config.CreateCommand } : {}),
    };
  }

  /** podman itself resolves an id, a name or a unique id prefix; an ambiguous prefix counts as not found. */
  private async inspect(ref: string): Promise<InspectEntry> {
    const out = await this.podman(['container', 'inspect', '--', ref], (f) =>
      /no such container|more than one result/i.test(f.stderr) ? notFound(ref) : undefined,
    );
    const [entry] = JSON.parse(out) as InspectEntry[];
    if (!entry) throw notFound(ref);
    return entry;
  }

  async checkpoint(req: CheckpointRequest): Promise<CheckpointOutcome> {
    const c = req.container;
    if (c.state !== 'running') throw notRunning(c.name, c.state);
    if (req.inPlace) return this.checkpointInPlace(req);
    if (req.preDump && req.parentPath) {
      throw new FerryError('unsupported', 'podman keeps a single pre-checkpoint per container; a pre-dump cannot have a parent', {
        hint: 'take a full checkpoint on top of the pre-dump',
      });
    }
    // Inside the store's directory: same filesystem as the result, and swept with it if the agent dies.
    const archive = path.join(req.dir, '.podman-export.tar');
    const args = ['container', 'checkpoint', '--export', archive, '--compress', 'none'];
    if (req.preDump) args.push('--pre-checkpoint');
    else if (req.leaveRunning) args.push('--leave-running');
    if (req.parentPath) args.push('--with-previous');
    // podman writes the rootfs diff after CRIU lets a leave-running container go; frozen, both are one state.
    // A stopping dump is frozen first too: CRIU's own freeze costs 100 ms more (freezeBeforeDump).
    // No pid: it stopped since it was listed, and podman's refusal below says so.
    const pid = req.preDump || req.heldFrozen ? 0 : await this.pidOf(c);
    const thaw = pid ? await freezeBeforeDump(pid, c.name, req.leaveRunning) : undefined;
    try {
      try {
        await this.podman([...args, '--', c.id], (f) => this.checkpointFailure(c, req, f));
      } finally {
        await thaw?.();
      }
      await runCommand('tar', ['-C', req.dir, '-xf', archive]);
    } finally {
      await rm(archive, { force: true });
    }
    // podman exports a pre-dump's images as pre-checkpoint/; the store keeps every dump's under checkpoint/.
    if (req.preDump) await rename(path.join(req.dir, 'pre-checkpoint'), path.join(req.dir, 'checkpoint'));
    // podman links an incremental dump to its private ../pre-checkpoint; in the store the parent is a checkpoint.
    if (req.parentPath) {
      const link = path.join(req.dir, 'checkpoint', 'parent');
      await rm(link, { force: true });
      await symlink(req.parentPath, link);
    }
    req.onWritten?.('checkpoint');

    const [stats, config] = await Promise.all([
      readDumpStats(path.join(req.dir, 'stats-dump')),
      readFile(path.join(req.dir, 'config.dump'), 'utf8').then(
        (raw) => JSON.parse(raw) as { id?: string; name?: string; rootfsImageName?: string },
      ),
    ]);
    const runtimeMeta = { id: config.id ?? c.id, name: config.name ?? c.name, image: config.rootfsImageName ?? c.image };
    return { ...(stats ? { stats } : {}), runtimeMeta };
  }

  private async checkpointFailure(c: ContainerInfo, req: CheckpointRequest, f: CommandFailure): Promise<FerryError> {
    if (/no such container/i.test(f.stderr)) return notFound(c.id);
    const stopped = /"(\w+)" is not running, cannot checkpoint/.exec(f.stderr);
    if (stopped) return notRunning(c.name, stopped[1] ?? 'stopped');
    // runc asks CRIU for memory tracking before a pre-dump; podman may ask first. Either way it is the kernel.
    if ((req.preDump || req.parentPath) && /missing features|does not support memory tracking/.test(f.stderr)) {
      return new FerryError('unsupported', `podman cannot pre-dump ${c.name}: ${f.stderr}`, {
        hint: 'this kernel has no soft-dirty memory tracking (CONFIG_MEM_SOFT_DIRTY); use a full checkpoint',
      });
    }
    const log =
      logFileIn(f.stderr) ??
      (await this.inspect(c.id).then(
        (e) => path.join(e.StaticDir, 'dump.log'),
        () => undefined,
      ));
    return failure('checkpoint', c.name, f, log, 'the container was left as it was');
  }

  /**
   * A stopping dump in the container's own directory, moved into the store: no export archive is written
   * and none is unpacked. Its writable layer goes along as the overlay upper directory, packed after the
   * dump (the container is stopped then, and podman has unmounted it; the directory stays).
   */
  private async checkpointInPlace(req: CheckpointRequest): Promise<CheckpointOutcome> {
    const c = req.container;
    if (req.preDump || req.parentPath || req.leaveRunning || req.lazy) {
      throw new FerryError('bad_request', 'an in-place podman checkpoint is a stopping full dump only', {
        details: { field: 'inPlace' },
      });
    }
    const e = await this.inspect(c.id);
    const upper = e.GraphDriver?.Data?.UpperDir;
    const pid = req.heldFrozen ? 0 : e.State.Pid;
    const thaw = pid ? await freezeBeforeDump(pid, c.name, false) : undefined;
    let out: string;
    try {
      out = await this.podman(['container', 'checkpoint', '--print-stats', '--', c.id], (f) => this.checkpointFailure(c, req, f));
    } finally {
      await thaw?.();
    }
    await moveTree(path.join(e.StaticDir, IMAGES), path.join(req.dir, IMAGES));
    req.onWritten?.(IMAGES);
    await Promise.all([
      ...USERDATA_FILES.map((f) => moveFile(path.join(e.StaticDir, f), path.join(req.dir, f))),
      upper ? packUpperDir(upper, path.join(req.dir, UPPER_ARCHIVE)) : undefined,
    ]);
    const stats = dumpStats((JSON.parse(out) as CheckpointReport).container_statistics?.[0]?.criu_statistics);
    return {
      ...(stats ? { stats } : {}),
      runtimeMeta: { id: e.Id, name: e.Name, image: e.ImageName, imageId: e.Image, layout: IN_PLACE },
    };
  }

  async prepare(req: PrepareRequest): Promise<ContainerInfo> {
    const twin = twinCreateArgs(req.source, req.name);
    if ('reason' in twin) {
      throw new FerryError('unsupported', `no twin of this container can be prepared: ${twin.reason}`, {
        hint: 'migrate with export and import',
      });
    }
    const id = (await this.podman(twin.args, (f) => (/already in use/.test(f.stderr) ? conflict(req.name, f) : undefined))).trim();
    try {
      // init writes the bundle's config.json, the template an in-place restore reads; stop ends runc's
      // waiting init process before it ever ran the container's command, and unmounts the layer.
      await this.podman(['init', '--', id]);
      await this.podman(['stop', '--time', '0', '--', id]);
      const made = await this.inspect(id);
      if (made.Image !== req.source.imageId) {
        throw new FerryError('unsupported', `the twin got image ${made.Image}, not ${req.source.imageId}`, {
          hint: 'bring the same image here, or migrate with export and import',
        });
      }
      const twinInfo = await this.find(id);
      if (!twinInfo) throw new FerryError('runtime_failed', `podman created ${id} but no longer finds it`);
      return twinInfo;
    } catch (err) {
      await this.remove(id).catch(() => undefined);
      throw err;
    }
  }

  async restore(req: RestoreRequest): Promise<RestoreOutcome> {
    if (req.runtimeMeta.layout === IN_PLACE) return this.restoreInPlace(req);
    if (req.into) {
      throw new FerryError('bad_request', 'only an in-place checkpoint is restored into an existing container', {
        details: { field: 'into' },
      });
    }
    const work = await mkdtemp(path.join(os.tmpdir(), 'ferry-podman-restore-'));
    try {
      const [archives, name] = await Promise.all([packForImport(req.dir, work), this.restoreName(req)]);
      await req.verified;
      const args = ['container', 'restore', '--import', archives.checkpoint, '--print-stats'];
      if (archives.previous) args.push('--import-previous', archives.previous);
      if (name) args.push('--name', name);
      const out = await this.podman(args, (f) => this.restoreFailure(f, req, true));
      return await this.restored(out);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /**
   * Into the prepared twin (its layer gets the source's changes), or back into the stopped original (its
   * layer still has them). The images are linked into the container's directory, where podman wants them.
   */
  private async restoreInPlace(req: RestoreRequest): Promise<RestoreOutcome> {
    if (!req.into) {
      throw new FerryError('bad_request', 'this checkpoint was taken in place: say which stopped container it goes into', {
        hint: 'a twin prepared with POST /v1/containers/podman/prepare, or the original container',
        details: { field: 'into' },
      });
    }
    const e = await this.inspect(req.into);
    if (e.State.Status === 'running' || e.State.Status === 'paused') {
      throw new FerryError('conflict', `podman container ${e.Name} is ${e.State.Status}; a restore needs it stopped`);
    }
    const images = path.join(e.StaticDir, IMAGES);
    const upper = e.GraphDriver?.Data?.UpperDir;
    const original = e.Id === req.runtimeMeta.id;
    const archive = path.join(req.dir, UPPER_ARCHIVE);
    await rm(images, { recursive: true, force: true });
    try {
      await Promise.all([
        linkOrCopyTree(path.join(req.dir, IMAGES), images),
        ...USERDATA_FILES.map((f) => linkOrCopyFile(path.join(req.dir, f), path.join(e.StaticDir, f))),
        !original && upper && (await pathExists(archive)) ? unpackUpperDir(archive, upper) : undefined,
      ]);
      await req.verified;
      const out = await this.podman(['container', 'restore', '--print-stats', '--', e.Id], (f) => this.restoreFailure(f, req, false));
      return await this.restored(out);
    } catch (err) {
      await rm(images, { recursive: true, force: true });
      throw err;
    }
  }

  private async restored(out: string): Promise<RestoreOutcome> {
    const restored = (JSON.parse(out) as RestoreReport).container_statistics?.[0];
    const container = restored && (await this.find(restored.Id));
    if (!container) throw new FerryError('runtime_failed', `podman restore reported success but no container: ${out}`);
    const stats = restoreStats(restored.criu_statistics);
    return { container, ...(stats ? { stats } : {}) };
  }

  /**
   * Without --name podman restores the original name and id (and its address): right for a migration, but
   * refused while the original, even stopped, still exists here. Then the copy gets a name of its own.
   */
  private async restoreName(req: RestoreRequest): Promise<string | undefined> {
    if (req.name) return req.name;
    const id = String(req.runtimeMeta.id ?? '');
    const name = String(req.runtimeMeta.name ?? '');
    const taken = (await this.list()).some((c) => c.id === id || c.name === name);
    return taken ? `${name || 'podman'}-restored-${randomBytes(3).toString('hex')}` : undefined;
  }

  /** ownsContainer: the restore created the container (--import), so a failure removes it. */
  private async restoreFailure(f: CommandFailure, req: RestoreRequest, ownsContainer: boolean): Promise<FerryError> {
    if (/already in use/.test(f.stderr)) {
      return new FerryError('conflict', `podman restore failed: ${f.stderr}`, { hint: 'choose another name' });
    }
    // podman restores onto the image with the id in config.dump. Without an image of that name it pulls the
    // name; with one of another id (the same image imported anew: `podman import` stamps the time into the
    // config, hence the id) it fails to parse the id as a name. A node's own store meets both first.
    const pullFailed = /^Trying to pull /m.test(f.stderr) && /^Error: .*(docker:\/\/|registry|manifest|pull)/m.test(f.stderr);
    if (pullFailed || /creating container storage: .*cannot specify 64-byte hexadecimal/.test(f.stderr)) {
      const image = String(req.runtimeMeta.image ?? 'the image');
      const what = pullFailed ? `has no ${image} and could not pull it` : `has ${image}, but not with the checkpoint's image id`;
      return new FerryError('runtime_failed', `podman restore failed: this podman ${what}: ${f.stderr}`, {
        hint: `bring ${image} here with the same id (pull it by digest, or podman save there and podman load here), then retry`,
      });
    }
    const log = logFileIn(f.stderr);
    const err = await failure('restore', path.basename(req.dir), f, log, 'nothing was left running');
    // A failed CRIU restore leaves podman's new container behind in 'created': it is this restore's own, and
    // in the way of a retry under the same name. Its log is read above, before removal deletes it.
    const leftover = ownsContainer && log && /\/([0-9a-f]{64})\/userdata\//.exec(log)?.[1];
    if (leftover) await this.remove(leftover).catch(() => undefined);
    return err;
  }

  async hasImage(ref: string): Promise<boolean> {
    return this.podman(['image', 'exists', '--', ref]).then(
      () => true,
      (err: unknown) => {
        // `image exists` answers "no" with exit code 1 and nothing on stderr.
        if (isFerryError(err) && err.details?.exitCode === 1) return false;
        throw err;
      },
    );
  }

  async exec(ref: string, argv: string[]): Promise<string> {
    return this.podman(['exec', '--', ref, ...argv], (f) => {
      if (/no such container/i.test(f.stderr)) return notFound(ref);
      if (/can only create exec sessions on running containers/.test(f.stderr)) {
        return new FerryError('container_not_running', `podman container ${ref} is not running`);
      }
      return undefined;
    });
  }

  /** The raw cgroup freezer: `podman pause` would make podman refuse to checkpoint the container. */
  async freeze(c: ContainerInfo): Promise<Thaw> {
    return holdFrozen(await this.pidOf(c), c.name);
  }

  /** The container's init pid as listed, else as podman reports it now (0 when it does not run). */
  private async pidOf(c: ContainerInfo): Promise<number> {
    return c.pid || (await this.inspect(c.id)).State.Pid;
  }

  async thaw(c: ContainerInfo): Promise<void> {
    const pid = await this.pidOf(c);
    if (pid) await thawPid(pid);
  }

  async remove(ref: string): Promise<void> {
    // -t 0: a shell as pid 1 ignores SIGTERM, and podman would wait its full stop timeout before killing.
    await this.podman(['rm', '--force', '--ignore', '--time', '0', '--', ref]);
  }
}

/**
 * podman's import wants its export layout back. An incremental dump's parent travels as a second archive
 * holding pre-checkpoint/, and the dump's `parent` link is pointed at it, as podman's own export has it.
 */
async function packForImport(dir: string, work: string): Promise<{ checkpoint: string; previous?: string }> {
  const names = (await readdir(dir)).filter((n) => n !== MANIFEST_FILE);
  const checkpoint = path.join(work, 'checkpoint.tar');
  const parent = await readlink(path.join(dir, 'checkpoint', 'parent')).catch(() => undefined);
  if (!parent) {
    await runCommand('tar', ['-C', dir, '-cf', checkpoint, ...names]);
    return { checkpoint };
  }
  const previous = path.join(work, 'pre-checkpoint.tar');
  await Promise.all([
    // Flags sRH: rewrite symlink targets only (the one symlink is `parent`), never member names.
    runCommand('tar', ['-C', dir, '--transform', 's,.*,../pre-checkpoint,sRH', '-cf', checkpoint, ...names]),
    runCommand('tar', ['-C', path.resolve(dir, 'checkpoint', parent), '--transform', 's,^\\.,pre-checkpoint,', '-cf', previous, '.']),
  ]);
  return { checkpoint, previous };
}

/**
 * podman passes on runc's error, which names CRIU's log in the container's userdata directory; sometimes
 * inside a quoted logrus message, hence no quotes in the path.
 */
function logFileIn(stderr: string): string | undefined {
  return /log file: ([^\s"]+)/.exec(stderr)?.[1];
}

async function failure(op: string, what: string, f: CommandFailure, log: string | undefined, outcome: string): Promise<FerryError> {
  const criuLog = log ? await relevantCriuLogLines(log, CRIU_LOG_TAIL) : [];
  const byCriu = /criu failed/i.test(f.stderr) || criuLog.length > 0;
  return new FerryError(
    byCriu ? 'criu_failed' : 'runtime_failed',
    `podman ${op} of ${what} failed: ${f.stderr || `exit code ${f.exitCode}`}`,
    {
      hint: byCriu ? `${outcome}; see criuLog, and check 'criu check' on this node` : outcome,
      ...(criuLog.length ? { criuLog } : {}),
      details: { exitCode: f.exitCode },
    },
  );
}

function dumpStats(s: NonNullable<CheckpointReport['container_statistics']>[number]['criu_statistics']): CriuDumpStats | undefined {
  if (!s) return undefined;
  const pagesWritten = s.pages_written ?? 0;
  return {
    freezingTimeMs: (s.freezing_time ?? 0) / 1000,
    frozenTimeMs: (s.frozen_time ?? 0) / 1000,
    memdumpTimeMs: (s.memdump_time ?? 0) / 1000,
    memwriteTimeMs: (s.memwrite_time ?? 0) / 1000,
    pagesScanned: s.pages_scanned ?? 0,
    pagesSkippedParent: 0,
    pagesWritten,
    pagesLazy: 0,
    bytesWritten: pagesWritten * PAGE_SIZE,
  };
}

/** A rename on one filesystem; across two, a copy and then the original removed. */
async function moveTree(from: string, to: string): Promise<void> {
  await rename(from, to).catch(async (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EXDEV') throw err;
    await linkOrCopyTree(from, to);
    await rm(from, { recursive: true, force: true });
  });
}

/** podman writes these only when there is something to keep (a /dev/shm with files, a network). */
async function moveFile(from: string, to: string): Promise<void> {
  if (await pathExists(from)) await moveTree(from, to);
}

async function linkOrCopyFile(from: string, to: string): Promise<void> {
  if (!(await pathExists(from))) return;
  await rm(to, { force: true });
  await link(from, to).catch(() => copyFile(from, to));
}

function conflict(name: string, f: CommandFailure): FerryError {
  return new FerryError('conflict', `podman already has a container named ${name}: ${f.stderr}`, { hint: 'remove it there first' });
}

function restoreStats(s: NonNullable<RestoreReport['container_statistics']>[number]['criu_statistics']): CriuRestoreStats | undefined {
  if (!s) return undefined;
  // podman drops zero fields (omitempty); CRIU's times are microseconds.
  return {
    pagesCompared: s.pages_compared ?? 0,
    pagesSkippedCow: s.pages_skipped_cow ?? 0,
    forkingTimeMs: (s.forking_time ?? 0) / 1000,
    restoreTimeMs: (s.restore_time ?? 0) / 1000,
    pagesRestored: s.pages_restored ?? 0,
  };
}

function notFound(ref: string): FerryError {
  return new FerryError('container_not_found', `podman has no container ${ref}`, { hint: 'list containers with `podman ps -a`' });
}

function notRunning(name: string, state: string): FerryError {
  return new FerryError('container_not_running', `podman container ${name} is ${state}, not running`, {
    hint: 'only a running container can be checkpointed',
  });
}
