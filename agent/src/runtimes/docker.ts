/**
 * docker through its Engine API (dockerode). Checkpoints are an experimental Engine feature: dockerd must
 * run with `"experimental": true` (scripts/setup-host.sh writes it).
 *
 * What the Engine API allows, measured on docker 20.10 with containerd 1.6, and how Ferry uses it:
 * - `POST /containers/{id}/checkpoints` takes a custom CheckpointDir and writes CRIU's images to
 *   `<dir>/<CheckpointID>`: Ferry names the checkpoint `checkpoint`, so they land where the store wants them.
 * - `POST /containers/{id}/start?checkpoint=` refuses a custom checkpoint dir ("custom checkpointdir is not
 *   supported"): a restore creates the new container, places the images in that container's own checkpoint
 *   directory under dockerd's root (hard links when on the same filesystem), starts it, and removes them.
 * - The Engine has no pre-dump: incremental chains need runc or podman.
 * - containerd runs CRIU in a work directory it deletes afterwards, so neither `stats-dump` nor CRIU's log
 *   survive a docker checkpoint: docker checkpoints report wall-clock time only and errors carry docker's
 *   message without CRIU log lines. Ferry says so rather than estimate (docs/architecture.md).
 * - The writable layer is not part of a docker checkpoint. Ferry tars the container's overlay upper
 *   directory into `rootfs-diff.tar` (whiteouts included) and unpacks it into the new container's upper
 *   directory before starting it, so files the process wrote survive the move.
 */
import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { FerryError } from '../errors.js';
import { linkOrCopyTree, packUpperDir, unpackUpperDir } from './overlay.js';
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

export interface DockerDriverOptions {
  /** dockerd's socket; dockerode's default (/var/run/docker.sock or DOCKER_HOST) when absent. */
  socketPath?: string;
}

/** Where CRIU's images go inside the store's directory, and the checkpoint's name as docker knows it. */
const IMAGES = 'checkpoint';
const ROOTFS_DIFF = 'rootfs-diff.tar';
/** containerd's bundle for a running docker container: holds the OCI spec runc was given. */
const CONTAINERD_BUNDLES = '/run/containerd/io.containerd.runtime.v2.task/moby';

const STATES: Record<string, ContainerState> = {
  running: 'running',
  paused: 'paused',
  created: 'created',
  exited: 'stopped',
  dead: 'stopped',
  removing: 'stopped',
  restarting: 'unknown',
};

/** In dockerode but missing from its types. */
interface CheckpointApi {
  createCheckpoint(opts: { CheckpointID: string; CheckpointDir?: string; Exit?: boolean }): Promise<unknown>;
}

/** overlay2 reports its directories in GraphDriver.Data; dockerode types that as devicemapper's. */
function upperDirOf(info: Docker.ContainerInspectInfo): string | undefined {
  return (info.GraphDriver.Data as unknown as Record<string, string> | undefined)?.UpperDir;
}

/** What dockerode throws for an Engine error response. */
interface EngineError {
  statusCode?: number;
  json?: { message?: string };
  message: string;
}

const engineMessage = (err: unknown) => {
  const e = err as EngineError;
  return (e.json?.message ?? e.message ?? String(err)).trim();
};

export class DockerDriver implements RuntimeDriver {
  readonly name = 'docker' as const;
  private readonly docker: Docker;
  private rootDir?: Promise<string>;

  constructor(opts: DockerDriverOptions = {}) {
    this.docker = new Docker(opts.socketPath ? { socketPath: opts.socketPath } : undefined);
  }

  async status(): Promise<RuntimeStatus> {
    try {
      // Experimental is in the Engine's answer but not in dockerode's types.
      const v = (await this.docker.version()) as Docker.DockerVersion & { Experimental?: boolean };
      if (!v.Experimental) {
        return {
          runtime: 'docker',
          available: false,
          version: v.Version,
          reason:
            'dockerd runs without experimental features, which checkpoints need: set {"experimental": true} in /etc/docker/daemon.json (scripts/setup-host.sh) and restart dockerd',
        };
      }
      return { runtime: 'docker', available: true, version: v.Version };
    } catch (err) {
      return {
        runtime: 'docker',
        available: false,
        reason: `dockerd does not answer (${engineMessage(err)}); start it with scripts/services.sh start docker`,
      };
    }
  }

  async list(): Promise<ContainerInfo[]> {
    const entries = await this.docker.listContainers({ all: true });
    return entries.map((e) => ({
      id: e.Id,
      name: (e.Names[0] ?? e.Id).replace(/^\//, ''),
      runtime: 'docker' as const,
      state: STATES[e.State] ?? 'unknown',
      image: e.Image,
      imageId: e.ImageID,
      createdAt: new Date(e.Created * 1000).toISOString(),
      ...labelsField(e.Labels),
    }));
  }

  async find(ref: string): Promise<ContainerInfo | undefined> {
    const e = await this.inspect(ref).catch((err: unknown) => {
      if ((err as EngineError).statusCode === 404) return undefined;
      throw engineFailure('inspect', ref, err);
    });
    if (!e) return undefined;
    const state = STATES[e.State.Status] ?? 'unknown';
    return {
      id: e.Id,
      name: e.Name.replace(/^\//, ''),
      runtime: 'docker',
      state,
      ...(state === 'running' && e.State.Pid ? { pid: e.State.Pid } : {}),
      image: e.Config.Image,
      imageId: e.Image,
      createdAt: e.Created,
      ...labelsField(e.Config.Labels),
    };
  }

  private inspect(ref: string): Promise<Docker.ContainerInspectInfo> {
    return this.docker.getContainer(ref).inspect();
  }

  async checkpoint(req: CheckpointRequest): Promise<CheckpointOutcome> {
    const c = req.container;
    if (req.preDump || req.parentPath) {
      throw new FerryError('unsupported', 'the Docker Engine API has no pre-dump or incremental checkpoint', {
        hint: 'take a full checkpoint, or run the container under runc or podman for pre-copy',
      });
    }
    if (c.state !== 'running') throw notRunning(c.name, c.state);
    const info = await this.inspect(c.id).catch((err: unknown) => {
      throw (err as EngineError).statusCode === 404 ? notFound(c.id) : engineFailure('inspect', c.name, err);
    });
    // The spec exists only while containerd runs the task: read it before a stopping checkpoint ends it.
    const spec = await readFile(path.join(CONTAINERD_BUNDLES, info.Id, 'config.json'), 'utf8').catch(() => undefined);

    try {
      const container = this.docker.getContainer(info.Id) as Docker.Container & CheckpointApi;
      await container.createCheckpoint({ CheckpointID: IMAGES, CheckpointDir: req.dir, Exit: !req.leaveRunning });
    } catch (err) {
      // dockerd may have made the directory before CRIU failed; the store's directory must stay empty.
      await rm(path.join(req.dir, IMAGES), { recursive: true, force: true });
      throw checkpointFailure(c.name, err);
    }
    req.onWritten?.('checkpoint');

    // Not overlay2 (no upper directory): the restored container starts from its image's filesystem.
    const upper = upperDirOf(info);
    await Promise.all([
      writeFile(path.join(req.dir, 'config.dump'), JSON.stringify(info, null, 2)),
      spec ? writeFile(path.join(req.dir, 'spec.dump'), spec) : undefined,
      upper ? packUpperDir(upper, path.join(req.dir, ROOTFS_DIFF)) : undefined,
    ]);
    return { runtimeMeta: { id: info.Id, name: info.Name.replace(/^\//, ''), image: info.Config.Image } };
  }

  async restore(req: RestoreRequest): Promise<RestoreOutcome> {
    const recorded = JSON.parse(await readFile(path.join(req.dir, 'config.dump'), 'utf8')) as Docker.ContainerInspectInfo;
    const name = req.name ?? (await this.restoreName(recorded));
    const created = await this.docker
      .createContainer({ ...recorded.Config, name, HostConfig: recorded.HostConfig })
      .catch((err: unknown) => {
        if ((err as EngineError).statusCode === 409) {
          throw new FerryError('conflict', `docker restore failed: ${engineMessage(err)}`, { hint: 'choose another name' });
        }
        throw engineFailure('create', name, err);
      });
    const checkpointName = `ferry-${randomBytes(4).toString('hex')}`;
    let images: string | undefined;
    try {
      const info = await created.inspect();
      await this.unpackUpperDir(req.dir, info);
      await req.verified;
      images = path.join(await this.dockerRoot(), 'containers', info.Id, 'checkpoints', checkpointName);
      await linkOrCopyTree(path.join(req.dir, IMAGES), images);
      // dockerd 20.10 uploads the images to containerd as a tar and fails with "commit failed: content
      // ...: already exists" when that tar's digest is already in containerd's store (an earlier restore of
      // the same images, or containerd's own checkpoint blob). A file unique to this restore, which CRIU
      // ignores, makes every upload new.
      await writeFile(path.join(images, `ferry-restore-${checkpointName}`), '');
      // A query parameter: dockerd refuses any body on start, and dockerode sends its options as both.
      await created.start({ _query: { checkpoint: checkpointName }, _body: {} } as Docker.ContainerStartOptions).catch((err: unknown) => {
        throw restoreFailure(name, err);
      });
    } catch (err) {
      await created.remove({ force: true }).catch(() => undefined);
      throw err;
    } finally {
      if (images) await rm(images, { recursive: true, force: true });
    }
    const container = await this.find(created.id);
    if (!container) throw new FerryError('runtime_failed', `docker restored ${name} but no longer lists it`);
    return { container };
  }

  /** The original name on a node that does not have it (a migration); a fresh one beside the original. */
  private async restoreName(recorded: Docker.ContainerInspectInfo): Promise<string> {
    const original = recorded.Name.replace(/^\//, '');
    const taken = await this.find(original);
    return taken ? `${original}-restored-${randomBytes(3).toString('hex')}` : original;
  }

  private async unpackUpperDir(dir: string, info: Docker.ContainerInspectInfo): Promise<void> {
    const upper = upperDirOf(info);
    const archive = path.join(dir, ROOTFS_DIFF);
    const present = await readdir(dir).then((names) => names.includes(ROOTFS_DIFF));
    if (!upper || !present) return;
    await unpackUpperDir(archive, upper);
  }

  private dockerRoot(): Promise<string> {
    this.rootDir ??= this.docker.info().then((i: { DockerRootDir: string }) => i.DockerRootDir);
    return this.rootDir;
  }

  async hasImage(ref: string): Promise<boolean> {
    return this.docker
      .getImage(ref)
      .inspect()
      .then(
        () => true,
        (err: unknown) => {
          if ((err as EngineError).statusCode === 404) return false;
          throw engineFailure('image inspect', ref, err);
        },
      );
  }

  async exec(ref: string, argv: string[]): Promise<string> {
    const container = this.docker.getContainer(ref);
    const exec = await container.exec({ Cmd: argv, AttachStdout: true, AttachStderr: true }).catch((err: unknown) => {
      const e = err as EngineError;
      if (e.statusCode === 404) throw notFound(ref);
      if (e.statusCode === 409) throw new FerryError('container_not_running', `docker container ${ref} is not running`);
      throw engineFailure('exec', ref, err);
    });
    const stream = await exec.start({ hijack: true, stdin: false });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const out: Buffer[] = [];
    const errOut: Buffer[] = [];
    stdout.on('data', (b: Buffer) => out.push(b));
    stderr.on('data', (b: Buffer) => errOut.push(b));
    this.docker.modem.demuxStream(stream, stdout, stderr);
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    const { ExitCode } = await exec.inspect();
    if (ExitCode !== 0) {
      throw new FerryError(
        'runtime_failed',
        `${argv.join(' ')} in ${ref} exited with ${ExitCode}: ${Buffer.concat(errOut).toString().trim()}`,
      );
    }
    return Buffer.concat(out).toString();
  }

  async remove(ref: string): Promise<void> {
    await this.docker
      .getContainer(ref)
      .remove({ force: true })
      .catch((err: unknown) => {
        if ((err as EngineError).statusCode !== 404) throw engineFailure('remove', ref, err);
      });
  }
}

function checkpointFailure(name: string, err: unknown): FerryError {
  const e = err as EngineError;
  const message = engineMessage(err);
  if (e.statusCode === 404) return notFound(name);
  if (/\bnot running\b/.test(message)) return notRunning(name, 'not running');
  return engineFailure('checkpoint', name, err, 'the container was left as it was');
}

function restoreFailure(name: string, err: unknown): FerryError {
  return engineFailure('restore', name, err, 'nothing was left running');
}

function engineFailure(op: string, what: string, err: unknown, outcome?: string): FerryError {
  const message = engineMessage(err);
  const byCriu = /criu/i.test(message);
  const hint = byCriu
    ? `${outcome ? `${outcome}; ` : ''}containerd deletes CRIU's log, so run 'criu check' on this node and retry with runc or podman for CRIU's own log`
    : outcome;
  return new FerryError(byCriu ? 'criu_failed' : 'runtime_failed', `docker ${op} of ${what} failed: ${message}`, {
    ...(hint ? { hint } : {}),
    details: { statusCode: (err as EngineError).statusCode },
  });
}

function notFound(ref: string): FerryError {
  return new FerryError('container_not_found', `docker has no container ${ref}`, { hint: 'list containers with `docker ps -a`' });
}

function notRunning(name: string, state: string): FerryError {
  return new FerryError('container_not_running', `docker container ${name} is ${state}, not running`, {
    hint: 'only a running container can be checkpointed',
  });
}
