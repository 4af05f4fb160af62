/**
 * What a podman user does by hand to move a container between two nodes and stores, as the migration
 * benchmarks' baselines: `podman container checkpoint --export` on node a, the archive over a plain TCP
 * stream to node b (e2e/support/podman-baseline.ts: no checksum, no fsync, the receiver already
 * listening), `podman container restore --import` there, and the stopped original removed on a.
 * podmanPrecopyMove is podman's own pre-copy: `checkpoint --pre-checkpoint --export` while the container runs,
 * that archive copied, then `checkpoint --with-previous --export` (the delta) copied and restored with
 * `restore --import … --import-previous …`.
 *
 * The archives are not compressed (`--compress none`). `copy: 'file'` sends the export once podman has
 * written it, as with scp; `copy: 'stream'` has podman write into a FIFO that the sender streams while
 * the export runs.
 */
import { constants, open, rm } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import type { TestCluster } from '../../support/cluster.js';
import type { WorkloadStats } from '../../support/workload-bin.js';
import type { Received, TcpCopier } from '../../support/podman-baseline.js';
import { type BenchWorkload, podmanOn } from './bench-workload.js';
import { elapsed, type MoveSample } from './ferry-move.js';

export type CopyMode = 'file' | 'stream';

export interface PodmanSample extends MoveSample {
  checkpointMs: number;
  /** The copy's own time: after the export for --copy file, overlapping it for --copy stream. */
  copyMs: number;
  /** How long the copy still ran after podman's checkpoint returned (negative: it ended before, while podman cleaned up). */
  copyAfterCheckpointMs: number;
  restoreMs: number;
  cleanupMs: number;
  criuRestoreMs: number;
}

/** podman's pre-copy: the pre-checkpoint and its copy happen while the workload runs, before checkpointMs. */
export interface PodmanPrecopySample extends PodmanSample {
  preCheckpointMs: number;
  preCopyMs: number;
  preBytes: number;
  /** CRIU's frozen time of the pre-checkpoint (podman freezes the container while CRIU collects its pages). */
  preFrozenMs: number;
}

export interface PodmanMoveOptions {
  cluster: TestCluster;
  /** A sender on a, a receiver on b writing under its own directory. */
  copier: TcpCopier;
  /** Where node a's exports go (a directory that exists). */
  exportDir: string;
  copy: CopyMode;
}

interface PodmanStats {
  container_statistics?: { criu_statistics?: { frozen_time?: number; restore_time?: number } }[];
}
const criuField = (stdout: string, field: 'frozen_time' | 'restore_time') =>
  ((JSON.parse(stdout) as PodmanStats).container_statistics?.[0]?.criu_statistics?.[field] ?? Number.NaN) / 1000;

/**
 * A FIFO whose reader waits for a writer that will never come gets an empty one, so the copy ends. Without a
 * reader (the sender already gave up) there is nothing to end, and a blocking open would wait forever.
 */
async function unblock(fifo: string): Promise<void> {
  const fh = await open(fifo, constants.O_WRONLY | constants.O_NONBLOCK).catch(() => undefined);
  await fh?.close();
}

interface Exported {
  /** performance.now() when the checkpoint started (after the FIFO was made). */
  startedAt: number;
  stdout: string;
  checkpointMs: number;
  copyMs: number;
  /** When the copy ended, since the checkpoint started. */
  copiedAt: number;
  got: Received;
}

/**
 * One `podman container checkpoint --export src …flags name` on a and the copy of the archive to b.
 * `received` is told where b's copy is as soon as it exists, so that the caller removes it whatever fails
 * later.
 */
async function exportAndCopy(
  o: PodmanMoveOptions,
  name: string,
  src: string,
  flags: string[],
  received: (p: string) => void,
): Promise<Exported> {
  if (o.copy === 'stream') await execa('mkfifo', [src]);
  const t0 = performance.now();
  // stream: the sender opens the FIFO now and blocks until podman opens it to write the export.
  let copiedAt = Number.NaN;
  const copying =
    o.copy === 'stream'
      ? o.copier.copy(src).then((r) => {
          copiedAt = elapsed(t0);
          return r;
        })
      : undefined;
  // Awaited below; a copy that fails while podman still runs must not count as an unhandled rejection.
  copying?.catch(() => undefined);
  const ck = await podmanOn(o.cluster, 'a', ['container', 'checkpoint', '--export', src, '--compress', 'none', ...flags, name]).catch(
    async (err: unknown) => {
      if (copying) {
        await unblock(src);
        await copying.catch(() => undefined);
      }
      throw err;
    },
  );
  const checkpointMs = elapsed(t0);
  const t1 = performance.now();
  const got = await (copying ?? o.copier.copy(src));
  received(got.path);
  if (!copying) copiedAt = elapsed(t0);
  const copyMs = o.copy === 'stream' ? copiedAt : elapsed(t1);
  return { startedAt: t0, stdout: ck.stdout, checkpointMs, copyMs, copiedAt, got };
}

export interface PodmanMove<S extends PodmanSample = PodmanSample> {
  sample: S;
  before: WorkloadStats;
  after: WorkloadStats;
}

/**
 * Starts the workload as `name` on a (a podman workload), moves it to b by podman's export and import,
 * and returns the figures once it ticks on b. Everything is removed from both nodes afterwards, whatever
 * happened.
 */
export async function podmanMove(o: PodmanMoveOptions, workload: BenchWorkload, name: string): Promise<PodmanMove> {
  const { sample, before, after } = await moveByPodman(o, workload, name, false);
  return { sample, before, after };
}

/** The same with podman's pre-copy: pre-checkpoint while it runs, then the delta `--with-previous`. */
export async function podmanPrecopyMove(
  o: PodmanMoveOptions,
  workload: BenchWorkload,
  name: string,
): Promise<PodmanMove<PodmanPrecopySample>> {
  const { sample, pre, before, after } = await moveByPodman(o, workload, name, true);
  if (!pre) throw new Error('no pre-checkpoint figures');
  return { sample: { ...sample, ...pre }, before, after };
}

async function moveByPodman(
  o: PodmanMoveOptions,
  workload: BenchWorkload,
  name: string,
  preCheckpoint: boolean,
): Promise<PodmanMove & { pre?: Omit<PodmanPrecopySample, keyof PodmanSample> }> {
  const src = path.join(o.exportDir, `${name}.tar`);
  const preSrc = path.join(o.exportDir, `${name}.pre.tar`);
  const before = await workload.start(name);
  const received: string[] = [];
  const keep = (p: string) => received.push(p);
  try {
    const pre = preCheckpoint ? await exportAndCopy(o, name, preSrc, ['--pre-checkpoint', '--print-stats'], keep) : undefined;
    // Its copy is on b now; a keeps only the pre-dump's images in podman's own directory.
    if (pre) await rm(preSrc, { force: true });
    const ck = await exportAndCopy(o, name, src, pre ? ['--with-previous', '--print-stats'] : ['--print-stats'], keep);
    const t0 = pre?.startedAt ?? ck.startedAt;
    const t2 = performance.now();
    const rs = await podmanOn(o.cluster, 'b', [
      'container',
      'restore',
      '--import',
      ck.got.path,
      ...(pre ? ['--import-previous', pre.got.path] : []),
      '--print-stats',
    ]);
    const restoreMs = elapsed(t2);
    const stopToRestoredMs = elapsed(ck.startedAt);
    // What a migration ends with: the container only on b, the stopped original and the archives gone.
    const t3 = performance.now();
    await Promise.all([podmanOn(o.cluster, 'a', ['rm', name]), rm(src, { force: true }), ...received.map((p) => rm(p, { force: true }))]);
    const cleanupMs = elapsed(t3);
    const totalMs = elapsed(t0);
    const after = await workload.statsAfter(name, before);
    const sample: PodmanSample = {
      downtimeMs: after.maxGapMs,
      totalMs,
      stopToRestoredMs,
      frozenMs: criuField(ck.stdout, 'frozen_time'),
      gapBeforeMs: before.maxGapMs,
      bytes: ck.got.bytes + (pre?.got.bytes ?? 0),
      checkpointMs: ck.checkpointMs,
      copyMs: ck.copyMs,
      copyAfterCheckpointMs: Math.round((ck.copiedAt - ck.checkpointMs) * 10) / 10,
      restoreMs,
      cleanupMs,
      criuRestoreMs: criuField(rs.stdout, 'restore_time'),
    };
    if (!pre) return { sample, before, after };
    return {
      sample,
      before,
      after,
      pre: {
        preCheckpointMs: pre.checkpointMs,
        preCopyMs: pre.copyMs,
        preBytes: pre.got.bytes,
        preFrozenMs: criuField(pre.stdout, 'frozen_time'),
      },
    };
  } finally {
    await workload.remove(name);
    await Promise.all([src, preSrc, ...received].map((p) => rm(p, { force: true })));
  }
}
