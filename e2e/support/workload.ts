/**
 * The stateful workload every runtime test uses: a busybox shell that keeps its count only in memory and
 * writes it to a file each tick. After a restore the count must continue from memory, never restart at 1.
 */
import { execFile } from 'node:child_process';
import { mkdir, copyFile, mkdtemp, readFile, symlink, rm, stat } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { scaled } from './time.js';

const run = promisify(execFile);

export const COUNT_FILE = '/tmp/count';
export const COUNTER_ARGV = ['/bin/sh', '-c', `i=0; while true; do i=$((i+1)); echo $i > ${COUNT_FILE}; sleep 0.05; done`];
/**
 * The same counter holding 4 MiB it never touches again (a string doubled 19 times): the shell alone is
 * about 24 pages, all of which its loop rewrites, so only with ballast does an incremental checkpoint
 * write visibly fewer pages than a full one (seen once: a base of 24 pages, then 25, 26, 24).
 */
export const COUNTER_WITH_BALLAST_ARGV = [
  '/bin/sh',
  '-c',
  `x=ferryfer; n=0; while [ $n -lt 19 ]; do x=$x$x; n=$((n+1)); done; i=0; while true; do i=$((i+1)); echo $i > ${COUNT_FILE}; sleep 0.05; done`,
];
const BUSYBOX = '/bin/busybox';
const APPLETS = ['sh', 'sleep', 'echo', 'cat', 'ls', 'true'];

/** A minimal root filesystem with a static busybox; rebuilt only when missing. */
export async function busyboxRootfs(dir: string): Promise<string> {
  const bin = path.join(dir, 'bin');
  if (await stat(path.join(bin, 'busybox')).catch(() => undefined)) return dir;
  await rm(dir, { recursive: true, force: true });
  for (const d of ['bin', 'tmp', 'proc', 'sys', 'dev', 'etc']) await mkdir(path.join(dir, d), { recursive: true });
  await copyFile(BUSYBOX, path.join(bin, 'busybox'));
  for (const applet of APPLETS) await symlink('busybox', path.join(bin, applet));
  return dir;
}

/**
 * Imports the busybox rootfs as a local image (no registry is reachable) for podman or docker. `cliArgs`
 * (global flags, e.g. podman's `--root`/`--runroot` of a node's private store) name another store: that
 * one gets a copy of the default store's image rather than an import of its own, because an import stamps
 * the time into the image's config, hence a new image id, and podman restores a checkpoint only onto an
 * image with the id it was taken on. A copy gives every store the same id, as a registry would.
 */
export async function importBusyboxImage(cli: 'podman' | 'docker', image: string, scratch: string, cliArgs: string[] = []): Promise<void> {
  const existing = await run(cli, [...cliArgs, 'image', 'inspect', image]).then(
    () => true,
    () => false,
  );
  if (existing) return;
  if (cliArgs.length) {
    await importBusyboxImage(cli, image, scratch);
    const dir = await mkdtemp(path.join(scratch, 'image-'));
    try {
      const archive = path.join(dir, 'image.tar');
      await run(cli, ['save', '-o', archive, image]);
      await run(cli, [...cliArgs, 'load', '-i', archive]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    return;
  }
  const rootfs = await busyboxRootfs(path.join(scratch, 'busybox-rootfs'));
  await run('sh', ['-c', `tar -C "${rootfs}" -c . | ${cli} import - ${image}`]);
}

/** Polls (the count file has no change notification across a container boundary) until pred holds. */
export async function waitFor<T>(
  probe: () => Promise<T>,
  pred: (v: T) => boolean,
  { timeoutMs = scaled(10_000), everyMs = 50, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastErr: unknown;
  while (Date.now() < deadline) {
    try {
      last = await probe();
      if (pred(last)) return last;
    } catch (err) {
      lastErr = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(
    `timed out waiting for ${what}; last value ${typeof last === 'object' ? JSON.stringify(last) : String(last)}${lastErr ? `, last error ${String(lastErr)}` : ''}`,
  );
}

/**
 * Reads the count through `cat`. The counter rewrites its file each tick (truncate, then write), so a read
 * can land between the two and see nothing: such a read is retried, never taken for a count of 0.
 */
export function readCount(cat: () => Promise<string>): Promise<number> {
  return waitFor(
    async () => Number((await cat()).trim() || Number.NaN),
    (n) => Number.isInteger(n) && n > 0,
    { timeoutMs: scaled(2_000), everyMs: 5, what: 'a complete count in the count file' },
  );
}

/** The count of the counter running as `pid`, read through its root from the host (no exec into it). */
export function countOf(pid: number): Promise<number> {
  return readCount(() => readFile(`/proc/${pid}/root${COUNT_FILE}`, 'utf8'));
}

/**
 * Asserts that a restored counter resumed from memory: it moves on from the value it shows right after
 * restore, and what it writes then is past `atCheckpoint`. A counter that restarted would write 1, 2, 3.
 */
export async function expectCountResumed(readCount: () => Promise<number>, atCheckpoint: number): Promise<{ first: number; next: number }> {
  const first = await waitFor(readCount, (n) => Number.isFinite(n) && n > 0, { what: 'a count after restore' });
  const next = await waitFor(readCount, (n) => n !== first, { what: 'the restored counter to move' });
  if (!(next > atCheckpoint)) throw new Error(`count restarted: ${next} after restore, ${atCheckpoint} at checkpoint`);
  const later = await waitFor(readCount, (n) => n > next, { what: 'the restored counter to keep counting' });
  return { first, next: later };
}
