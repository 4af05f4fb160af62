/**
 * The C workload (e2e/workload/ferry-workload.c) for migration tests and benchmarks: it holds a chosen
 * amount of memory, dirties it at a chosen rate, and reports its count and the longest gap between its
 * ticks, which is the downtime as the workload saw it. Built once per source version into a cache
 * directory, and put into a busybox rootfs so that `runc exec cat` can read its files.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { busyboxRootfs, waitFor } from './workload.js';

const run = promisify(execFile);

export const WORKLOAD_SOURCE = fileURLToPath(new URL('../workload/ferry-workload.c', import.meta.url));
/** Where workloadRootfs puts the binary, and where workloadArgv runs it from by default. */
export const WORKLOAD_BIN = '/bin/ferry-workload';
/** The default output directory, and so the stats file a container's workload writes. */
export const WORKLOAD_OUT = '/tmp';
export const WORKLOAD_STATS_FILE = `${WORKLOAD_OUT}/stats`;

export interface WorkloadStats {
  /** The tick counter; it lives only in memory, so after a restore it continues. */
  count: number;
  /** The longest time between two ticks, on the realtime clock: the downtime the workload saw. */
  maxGapMs: number;
  lastGapMs: number;
  rssMib: number;
  dirtyMibPerS: number;
  workingSetMib: number;
  tickMs: number;
  /** Gaps measured (count - 1). */
  ticks: number;
  /** Gaps longer than two ticks. */
  lateTicks: number;
  /** Memory rewritten since start, in MiB. */
  dirtiedMib: number;
  /** Realtime clock at this tick, in ms since the epoch. */
  nowMs: number;
  /** --verify: whole passes of checking every page against its checksum, and the pages that failed. */
  verifiedPasses: number;
  corruptPages: number;
  /** --grow-mib: how much of the reserve it has touched so far. */
  grownMib: number;
}

const NUMERIC_FIELDS = [
  'count',
  'maxGapMs',
  'lastGapMs',
  'rssMib',
  'dirtyMibPerS',
  'workingSetMib',
  'tickMs',
  'ticks',
  'lateTicks',
  'dirtiedMib',
  'nowMs',
  'verifiedPasses',
  'corruptPages',
  'grownMib',
] as const;

const GCC_FLAGS = ['-O2', '-static'];
let building: Promise<string> | undefined;

/**
 * Compiles the workload statically (the busybox rootfs has no libc) into `<tmpdir>/ferry-workload-<hash>/`,
 * only when no binary of this exact source and flags is there yet. The hash names the directory, so an
 * edited source gets a new binary and a stale one is never reused. gcc writes beside the target and the result
 * is renamed into place: ava runs test files in parallel processes, and a reader must never see half a binary.
 */
export function buildWorkload(): Promise<string> {
  building ??= (async () => {
    const source = await readFile(WORKLOAD_SOURCE);
    const hash = createHash('sha256').update(GCC_FLAGS.join(' ')).update('\0').update(source).digest('hex').slice(0, 16);
    const dir = path.join(os.tmpdir(), `ferry-workload-${hash}`);
    const bin = path.join(dir, 'ferry-workload');
    if (await stat(bin).catch(() => undefined)) return bin;
    await mkdir(dir, { recursive: true });
    const partial = `${bin}.${process.pid}.partial`;
    try {
      await run('gcc', [...GCC_FLAGS, '-o', partial, WORKLOAD_SOURCE]);
    } catch (err) {
      await rm(partial, { force: true });
      const stderr = (err as { stderr?: string }).stderr ?? '';
      const hint = /cannot find -lc\b/.test(stderr) ? ' (static libc missing: apt-get install libc6-dev)' : '';
      throw new Error(`building ${WORKLOAD_SOURCE} failed${hint}: ${stderr || String(err)}`);
    }
    await rename(partial, bin);
    return bin;
  })();
  // A failed build is not cached: the next caller tries again.
  building.catch(() => {
    building = undefined;
  });
  return building;
}

/**
 * A busybox rootfs (see busyboxRootfs) with the workload at /bin/ferry-workload. The binary is replaced
 * only when it differs, since CRIU checks an executable's size and build-ID on restore and a checkpoint
 * of the old one would no longer restore. It is replaced through a rename: writing over the executable
 * of a running container fails with ETXTBSY.
 */
export async function workloadRootfs(dir: string): Promise<string> {
  const bin = await buildWorkload();
  await busyboxRootfs(dir);
  const target = path.join(dir, WORKLOAD_BIN);
  const [want, have] = await Promise.all([readFile(bin), readFile(target).catch(() => undefined)]);
  if (!have?.equals(want)) {
    const partial = `${target}.${process.pid}.partial`;
    await copyFile(bin, partial);
    await rename(partial, target);
  }
  return dir;
}

/**
 * The workload's command line. `bin` defaults to its place in workloadRootfs, `out` to /tmp; on the host,
 * pass the path buildWorkload returned and a directory of the test's own.
 */
export function workloadArgv(opts: {
  rssMib: number;
  dirtyMibPerS: number;
  workingSetMib?: number;
  tickMs?: number;
  /** random (the default: incompressible) or compressible (small integers, about 4:1). */
  fill?: 'random' | 'compressible';
  /** Check the pages against checksums as it runs (corruptPages, verifiedPasses). */
  verify?: boolean;
  /** Reserve this much more and touch a page of it per tick (grownMib). */
  growMib?: number;
  out?: string;
  bin?: string;
}): string[] {
  const argv = [opts.bin ?? WORKLOAD_BIN, '--rss-mib', String(opts.rssMib), '--dirty-mib-per-s', String(opts.dirtyMibPerS)];
  if (opts.workingSetMib !== undefined) argv.push('--working-set-mib', String(opts.workingSetMib));
  if (opts.tickMs !== undefined) argv.push('--tick-ms', String(opts.tickMs));
  if (opts.fill) argv.push('--fill', opts.fill);
  if (opts.verify) argv.push('--verify');
  if (opts.growMib !== undefined) argv.push('--grow-mib', String(opts.growMib));
  argv.push('--out', opts.out ?? WORKLOAD_OUT);
  return argv;
}

/**
 * Reads and parses the stats file through `cat` (a file read on the host, `runc exec cat` in a container).
 * The workload renames a complete file into place, but a read can still come back empty or fail (the
 * file does not exist before the first tick, an exec can race a restore): such reads are retried.
 */
export function readWorkloadStats(cat: () => Promise<string>): Promise<WorkloadStats> {
  return waitFor(
    async () => JSON.parse(await cat()) as WorkloadStats,
    (s) => typeof s === 'object' && s !== null && NUMERIC_FIELDS.every((f) => typeof s[f] === 'number'),
    { timeoutMs: 5_000, everyMs: 10, what: 'complete workload stats' },
  );
}
