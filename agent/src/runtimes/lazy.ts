/**
 * Post-copy through CRIU's lazy pages, the two long-lived processes it needs.
 *
 * Source: `runc checkpoint --lazy-pages --page-server` dumps everything but memory, says so on its status
 * fd, and then serves the frozen container's memory from a TCP page server until the target has pulled all
 * of it; then CRIU kills the container and runc exits 0. If the transfer fails, CRIU thaws the container
 * and it runs on; if CRIU is told to stop (SIGTERM) before anyone pulled, the same. So until the pages are
 * served the source is the copy to fall back on, and afterwards the target is the only one.
 *
 * Target: `criu lazy-pages` connects to that page server and answers the restored process's page faults
 * (userfaultfd) through a socket in the restore's work dir; `runc restore --lazy-pages` finds it there.
 * The daemon exits once every page has arrived.
 */
import type { TlsFiles } from '../tls/identity.js';
import { execa } from 'execa';
import { spawn } from 'node:child_process';
import { watch as watchDir } from 'node:fs';
import { closeSync, constants, openSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import path from 'node:path';
import { relevantCriuLogLines } from '../criu/log.js';
import { FerryError } from '../errors.js';
import { pathExists } from '../store/files.js';

/** The source's side of a post-copy: settles when the target has every page (or the transfer failed). */
export interface PageServer {
  port: number;
  /** Resolves once all memory is served (the container is then gone); rejects if the transfer failed. */
  served: Promise<void>;
  /** Ends serving before the target pulled everything: CRIU thaws the container and it runs on here. */
  stop(): Promise<void>;
}

/** A TCP port free right now on this node, for a page server. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface LazyDumpOptions {
  runc: string;
  /** runc's global flags (its --root). */
  globalArgs: string[];
  id: string;
  imageDir: string;
  workDir: string;
  port: number;
  /** Hybrid: the last pre-copy round, relative to imageDir; only pages dirtied since then are served. */
  parentPath?: string;
  /** The agent's mTLS identity: the page server then speaks TLS and wants the puller's certificate. */
  tls?: TlsFiles;
}

/**
 * runc passes CRIU no TLS settings, but `criu swrk` reads the config file named by $CRIU_CONFIG_FILE
 * before it takes runc's request, and keeps what it read: TLS for the page server goes in there.
 */
async function criuTlsConfig(dir: string, tls: TlsFiles): Promise<string> {
  const file = path.join(dir, 'criu-tls.conf');
  await writeFile(file, ['tls', `tls-cacert ${tls.ca}`, `tls-cert ${tls.cert}`, `tls-key ${tls.key}`, ''].join('\n'), { mode: 0o600 });
  return file;
}

/** The same for `criu lazy-pages`, which takes flags. */
const criuTlsArgs = (tls: TlsFiles | undefined) =>
  tls ? ['--tls', '--tls-cacert', tls.ca, '--tls-cert', tls.cert, '--tls-key', tls.key] : [];

/**
 * A process in its own group that says "ready" by writing to fd 3 (runc's and CRIU's --status-fd).
 * runc insists on a status fd opened write-only, and node's extra stdio pipes are socket pairs (read-write),
 * so a FIFO in `dir` gives the child a true write end while this process reads the other.
 */
export async function spawnWithStatusFd(
  file: string,
  args: string[],
  dir: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ ready: boolean; exit: Promise<number | NodeJS.Signals>; stderr: () => string; group: number | undefined }> {
  const fifo = path.join(dir, `status-${process.pid}-${Date.now()}.fifo`);
  await execa('mkfifo', ['-m', '0600', fifo]);
  const readEnd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  const writeEnd = openSync(fifo, constants.O_WRONLY);
  const status = new net.Socket({ fd: readEnd, readable: true, writable: false });
  const child = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe', writeEnd], detached: true, env });
  closeSync(writeEnd);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exit = new Promise<number | NodeJS.Signals>((resolve) => {
    child.once('error', () => resolve(127));
    child.once('close', (code, signal) => resolve(code ?? signal ?? 1));
  });
  const ready = await new Promise<boolean>((resolve) => {
    status.once('data', () => resolve(true));
    void exit.then(() => resolve(false));
  });
  status.destroy();
  await rm(fifo, { force: true });
  return { ready, exit, stderr: () => stderr, group: child.pid };
}

/** Starts the lazy dump and resolves when the images are written and the page server listens. */
export async function startLazyDump(o: LazyDumpOptions): Promise<PageServer> {
  const args = [
    ...o.globalArgs,
    'checkpoint',
    '--lazy-pages',
    '--page-server',
    `0.0.0.0:${o.port}`,
    '--status-fd',
    '3',
    '--image-path',
    o.imageDir,
    '--work-path',
    o.workDir,
    ...(o.parentPath ? ['--parent-path', o.parentPath] : []),
    o.id,
  ];
  // Its own process group, so that stop() reaches CRIU (runc's child) too.
  const env = o.tls ? { ...process.env, CRIU_CONFIG_FILE: await criuTlsConfig(o.workDir, o.tls) } : process.env;
  const { ready, exit, stderr, group } = await spawnWithStatusFd(o.runc, args, o.workDir, env);
  const log = path.join(o.workDir, 'dump.log');
  const failure = async (what: string) =>
    new FerryError('criu_failed', `runc lazy checkpoint of ${o.id} ${what}: ${lastLine(stderr())}`, {
      hint: 'the container was left running; see criuLog',
      criuLog: await relevantCriuLogLines(log),
    });
  if (!ready) throw await failure('failed before its page server was up');

  let exited = false;
  const served = exit.then(async (code) => {
    exited = true;
    if (code === 0) return;
    throw await failure(`ended before the target had all memory (exit ${code})`);
  });
  served.catch(() => undefined);
  return {
    port: o.port,
    served,
    async stop() {
      if (!exited && group) signalGroup(group, 'SIGTERM');
      await exit;
      // CRIU, runc's child, thaws the container as it exits; runc may go first. No handle on CRIU gives an
      // exit event, so its group is watched until empty.
      if (group) await groupGone(group);
    },
  };
}

function signalGroup(group: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-group, signal);
    return true;
  } catch {
    return false;
  }
}

const GROUP_EXIT_LIMIT_MS = 10_000;

async function groupGone(group: number): Promise<void> {
  const deadline = Date.now() + GROUP_EXIT_LIMIT_MS;
  while (signalGroup(group, 0)) {
    if (Date.now() > deadline) {
      signalGroup(group, 'SIGKILL');
      return;
    }
    await sleep(10);
  }
}

export interface LazyPagesDaemonOptions {
  criu: string;
  imageDir: string;
  /** The restore's work dir: runc's CRIU looks for the daemon's socket there. */
  workDir: string;
  /** Post-copy: the source's page server the memory comes from. Without it, from imageDir's own images. */
  source?: { host: string; port: number };
  /** The agent's mTLS identity, shown to the source's page server (which checks it against the CA). */
  tls?: TlsFiles;
}

/**
 * The target's side: starts `criu lazy-pages` and resolves once its socket is there; `done` settles with it.
 * With a source it pulls pages from that page server (post-copy); without, it loads them from the local
 * images (a restore that resumes before its memory is in).
 */
export async function startLazyPagesDaemon(o: LazyPagesDaemonOptions): Promise<{ done: Promise<void>; stop(): void }> {
  const remote = o.source ? ['--page-server', '--address', o.source.host, '--port', String(o.source.port), ...criuTlsArgs(o.tls)] : [];
  const child = execa(
    o.criu,
    ['lazy-pages', ...remote, '--images-dir', o.imageDir, '--work-dir', o.workDir, '--log-file', 'lazy-pages.log', '-v4'],
    { stdio: 'ignore', reject: false },
  );
  const socket = path.join(o.workDir, 'lazy-pages.socket');
  const failure = async () =>
    o.source
      ? new FerryError('transfer_failed', `the lazy-pages daemon pulling from ${o.source.host}:${o.source.port} failed`, {
          hint: 'check that the source page server is reachable from this node; see criuLog',
          criuLog: await relevantCriuLogLines(path.join(o.workDir, 'lazy-pages.log')),
        })
      : new FerryError('criu_failed', `the lazy-pages daemon loading memory from ${o.imageDir} failed`, {
          hint: 'see criuLog; restore without lazyMemory',
          criuLog: await relevantCriuLogLines(path.join(o.workDir, 'lazy-pages.log')),
        });
  const exited = child.then(() => false);
  const watching = new AbortController();
  const appeared = socketAppears(socket, o.workDir, watching.signal);
  appeared.catch(() => undefined);
  const up = await Promise.race([appeared, exited]).finally(() => watching.abort());
  if (!up) throw await failure();
  const done = child.then(async (r) => {
    if (r.exitCode !== 0) throw await failure();
  });
  done.catch(() => undefined);
  return { done, stop: () => child.kill('SIGTERM') };
}

/** Resolves true when `file` exists in `dir`, watching the directory rather than polling it. */
function socketAppears(file: string, dir: string, signal: AbortSignal): Promise<true> {
  return new Promise((resolve, reject) => {
    // fs.watch starts at once (the promise API's starts only when iterated): nothing made after is missed.
    const watcher = watchDir(dir, { signal }, (_event, name) => {
      if (name === path.basename(file)) void pathExists(file).then((yes) => yes && done());
    });
    const done = () => {
      watcher.close();
      resolve(true);
    };
    watcher.on('error', (err) => (signal.aborted ? undefined : reject(err)));
    signal.addEventListener('abort', () => reject(signal.reason));
    void pathExists(file).then((yes) => yes && done());
  });
}

function lastLine(s: string): string {
  return s.split('\n').filter(Boolean).pop() ?? 'no output';
}
