/**
 * runc has no images and no names: a container is an id, a bundle (config.json + rootfs) and a state dir
 * under its root. A Ferry checkpoint therefore carries the bundle's spec and a tar of the whole rootfs, so
 * that it restores into a fresh bundle on any node, under any name.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { readDumpStats, readRestoreStats } from '../criu/stats.js';
import { relevantCriuLogLines } from '../criu/log.js';
import { FerryError } from '../errors.js';
import { runCommand, type Classifier, type CommandFailure } from './exec.js';
import type {
  CheckpointOutcome,
  CheckpointRequest,
  ContainerInfo,
  ContainerState,
  RestoreOutcome,
  RestoreRequest,
  RuntimeDriver,
  RuntimeStatus,
} from './types.js';

export interface RuncDriverOptions {
  binary?: string;
  /** runc's state root; on Kubernetes nodes the CRI runtime's (e.g. /run/containerd/runc/k8s.io). */
  root?: string;
  /** Where restored containers get their bundles. */
  bundlesDir: string;
  criu?: string;
}

interface RuncListEntry {
  id: string;
  pid: number;
  status: string;
  bundle: string;
  rootfs: string;
  created: string;
}

interface RuncMeta {
  id: string;
  bundle: string;
  rootfs: string;
}

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
    const e = await this.findEntry(ref);
    return e && this.toInfo(e);
  }

  async checkpoint(req: CheckpointRequest): Promise<CheckpointOutcome> {
    const entry = await this.findEntry(req.container.id);
    if (!entry) throw new FerryError('container_not_found', `runc container ${req.container.id} does not exist`);
    if (entry.status !== 'running') {
      throw new FerryError('container_not_running', `runc container ${entry.id} is ${entry.status}, not running`, {
        hint: 'only a running container can be checkpointed',
      });
    }
    const imageDir = path.join(req.dir, 'checkpoint');
    const workDir = path.join(req.dir, 'work');
    await mkdir(imageDir, { recursive: true });
    const args = ['checkpoint', '--image-path', imageDir, '--work-path', workDir];
    if (req.preDump) args.push('--pre-dump');
    else if (req.leaveRunning) args.push('--leave-running');
    if (req.parentPath) args.push('--parent-path', req.parentPath);
    await this.runc([...args, entry.id], (f) => criuFailure('checkpoint', entry.id, f, path.join(workDir, req.preDump ? 'pre-dump.log' : 'dump.log')));

    // CRIU writes its figures and log to the work dir; the checkpoint keeps them where podman would.
    const stats = await readDumpStats(path.join(workDir, 'stats-dump'));
    await moveIfPresent(path.join(workDir, 'stats-dump'), path.join(req.dir, 'stats-dump'));
    await moveIfPresent(path.join(workDir, req.preDump ? 'pre-dump.log' : 'dump.log'), path.join(req.dir, 'dump.log'));
    await rm(workDir, { recursive: true, force: true });

    const meta: RuncMeta = { id: entry.id, bundle: entry.bundle, rootfs: entry.rootfs };
    await copyFile(path.join(entry.bundle, 'config.json'), path.join(req.dir, 'spec.dump'));
    await writeFile(path.join(req.dir, 'config.dump'), JSON.stringify({ runtime: 'runc', ...meta, created: entry.created }));
    // Memory-only pre-dumps need no filesystem; a full dump carries the rootfs so it restores anywhere.
    if (!req.preDump) await runCommand('tar', ['-C', entry.rootfs, '-cf', path.join(req.dir, 'rootfs-diff.tar'), '.']);
    return { ...(stats ? { stats } : {}), runtimeMeta: { ...meta } };
  }

  async restore(req: RestoreRequest): Promise<RestoreOutcome> {
    const original = String(req.runtimeMeta.id ?? 'restored');
    const name = req.name ?? ((await this.findEntry(original)) ? `${original}-restored-${randomBytes(3).toString('hex')}` : original);
    if (await this.findEntry(name)) {
      throw new FerryError('conflict', `a runc container named ${name} already exists`, { hint: 'choose another name' });
    }
    const bundle = path.join(this.opts.bundlesDir, name);
    await rm(bundle, { recursive: true, force: true });
    await mkdir(path.join(bundle, 'rootfs'), { recursive: true });
    await runCommand('tar', ['-C', path.join(bundle, 'rootfs'), '-xf', path.join(req.dir, 'rootfs-diff.tar')]);
    const spec = JSON.parse(await readFile(path.join(req.dir, 'spec.dump'), 'utf8')) as { root?: { path?: string } };
    spec.root = { ...spec.root, path: 'rootfs' };
    await writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));

    // The checkpoint directory stays untouched (its manifest checksums must keep holding).
    const workDir = await mkdtemp(path.join(bundle, 'restore-'));
    try {
      await this.runc(
        ['restore', '--detach', '--image-path', path.join(req.dir, 'checkpoint'), '--work-path', workDir, '--bundle', bundle, name],
        (f) => criuFailure('restore', name, f, path.join(workDir, 'restore.log')),
      );
    } catch (err) {
      await rm(bundle, { recursive: true, force: true });
      throw err;
    }
    const stats = await readRestoreStats(path.join(workDir, 'stats-restore'));
    await rm(workDir, { recursive: true, force: true });
    const container = await this.find(name);
    if (!container) throw new FerryError('runtime_failed', `runc restored ${name} but does not list it`);
    return { container, ...(stats ? { stats } : {}) };
  }

  async exec(ref: string, argv: string[]): Promise<string> {
    return this.runc(['exec', ref, ...argv]);
  }

  async remove(ref: string): Promise<void> {
    const entry = await this.findEntry(ref);
    if (!entry) return;
    await this.runc(['delete', '--force', entry.id]);
    // Only bundles Ferry created are Ferry's to delete.
    if (path.dirname(entry.bundle) === path.resolve(this.opts.bundlesDir)) await rm(entry.bundle, { recursive: true, force: true });
  }
}

async function moveIfPresent(from: string, to: string): Promise<void> {
  await rename(from, to).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
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
