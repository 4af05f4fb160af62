/**
 * The C workload for migration tests and benchmarks, on the host and in a runc container under real CRIU:
 * it holds its memory, counts, dirties memory at the rate asked for, and reports a freeze (SIGSTOP, or a
 * checkpoint and restore) as its longest gap between ticks.
 */
import test from 'ava';
import { type ChildProcessByStdio, execFile, spawn } from 'node:child_process';
import { mkdtemp, open, readFile, readlink, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { execa } from 'execa';
import { readDumpStats } from '../agent/src/criu/stats.js';
import { runcRemove, runcState, startRuncCounter } from './support/runc.js';
import {
  buildWorkload,
  readWorkloadStats,
  WORKLOAD_STATS_FILE,
  type WorkloadStats,
  workloadArgv,
  workloadRootfs,
} from './support/workload-bin.js';
import { waitFor } from './support/workload.js';

const run = promisify(execFile);

let scratch: string;
let bin: string;
const children: ChildProcessByStdio<null, Readable, Readable>[] = [];
const containers: string[] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-workload-test-'));
  bin = await buildWorkload();
});

test.after.always(async () => {
  // SIGKILL also ends a workload a failed test left stopped.
  for (const child of children) child.kill('SIGKILL');
  for (const id of containers) await runcRemove(id);
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

interface HostWorkload {
  pid: number;
  ready: string;
  stats: () => Promise<WorkloadStats>;
}

/** Starts the workload on the host and resolves on its ready line, which it prints once its memory is touched. */
async function startOnHost(opts: { rssMib: number; dirtyMibPerS: number; growMib?: number; verify?: boolean }): Promise<HostWorkload> {
  const out = await mkdtemp(path.join(scratch, 'host-'));
  const [file, ...args] = workloadArgv({ ...opts, bin, out });
  const child = spawn(file as string, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const ready = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('ready ')) resolve(line);
    });
    child.once('error', reject);
    child.once('exit', (code, signal) => reject(new Error(`ferry-workload exited (${code ?? signal}) before it was ready: ${stderr}`)));
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error('ferry-workload has no pid');
  return { pid, ready, stats: () => readWorkloadStats(() => readFile(path.join(out, 'stats'), 'utf8')) };
}

async function vmRssMib(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(kb) / 1024;
}

test.serial('host: ready once its memory is touched, then it counts and holds that memory', async (t) => {
  const w = await startOnHost({ rssMib: 32, dirtyMibPerS: 8 });
  t.is(w.ready, 'ready rss=32 MiB');
  const first = await w.stats();
  t.true(first.count >= 1, 'the stats file exists once ready is printed');
  t.like(first, { rssMib: 32, dirtyMibPerS: 8, workingSetMib: 32, tickMs: 10 });
  const later = await waitFor(w.stats, (s) => s.count >= first.count + 5, { what: 'the count to increase' });
  t.true(later.count > first.count);
  const rss = await vmRssMib(w.pid);
  t.true(rss >= 32, `VmRSS ${rss.toFixed(1)} MiB covers the 32 MiB asked for`);
  t.log(`VmRSS ${rss.toFixed(1)} MiB, max gap ${later.maxGapMs} ms over ${later.ticks} ticks`);
});

test.serial('host: a 300 ms SIGSTOP shows up as the longest gap', async (t) => {
  const w = await startOnHost({ rssMib: 32, dirtyMibPerS: 8 });
  const before = await waitFor(w.stats, (s) => s.ticks >= 10, { what: '10 ticks' });
  t.true(before.maxGapMs < 250, `no gap near the freeze before it (${before.maxGapMs} ms)`);

  // The freeze is what is measured here, so this wait has to be a fixed time.
  const t0 = performance.now();
  process.kill(w.pid, 'SIGSTOP');
  await sleep(300);
  process.kill(w.pid, 'SIGCONT');
  const stoppedMs = performance.now() - t0;
  const resumedAt = Date.now();

  const after = await waitFor(w.stats, (s) => s.nowMs > resumedAt, { what: 'a tick after SIGCONT' });
  t.true(after.count > before.count);
  t.true(after.maxGapMs >= 250 && after.maxGapMs < 2000, `max gap ${after.maxGapMs} ms for a ${stoppedMs.toFixed(1)} ms stop`);
  t.true(after.lateTicks >= 1);
  t.log(`stopped ${stoppedMs.toFixed(1)} ms, max gap ${after.maxGapMs} ms`);
});

test.serial('host: dirties memory at the rate asked for, and not at all at rate 0', async (t) => {
  const w = await startOnHost({ rssMib: 32, dirtyMibPerS: 8 });
  const idle = await startOnHost({ rssMib: 32, dirtyMibPerS: 0 });
  const s0 = await w.stats();
  // The workload's own timestamps measure the interval, so the test's polling does not blur the rate.
  const s1 = await waitFor(w.stats, (s) => s.nowMs - s0.nowMs >= 1000, { what: 'a second of dirtying' });
  const rate = (s1.dirtiedMib - s0.dirtiedMib) / ((s1.nowMs - s0.nowMs) / 1000);
  t.true(rate >= 4 && rate <= 16, `dirtied ${rate.toFixed(2)} MiB/s for 8 asked`);
  t.log(`dirty rate ${rate.toFixed(2)} MiB/s over ${(s1.nowMs - s0.nowMs).toFixed(0)} ms, ${s1.ticks - s0.ticks} ticks`);
  const quiet = await waitFor(idle.stats, (s) => s.ticks >= 20, { what: '20 ticks of the idle workload' });
  t.is(quiet.dirtiedMib, 0);
});

test.serial('host: --grow-mib touches its reserve a page per tick; --verify finds a page changed behind its back', async (t) => {
  const w = await startOnHost({ rssMib: 2, dirtyMibPerS: 1, growMib: 1, verify: true });
  const grown = await waitFor(w.stats, (s) => s.grownMib >= 1 && s.verifiedPasses >= 2, { what: 'the reserve touched, two passes' });
  t.is(grown.corruptPages, 0, 'nothing changed the memory but the workload');
  // Its memory is the one mapping of 3 MiB (2 touched at start, 1 grown); one word of it is overwritten.
  const maps = await readFile(`/proc/${w.pid}/maps`, 'utf8');
  const region = maps
    .split('\n')
    .map((l) => /^([0-9a-f]+)-([0-9a-f]+) rw-p 00000000 00:00 0\s*$/.exec(l))
    .find((m) => m && Number.parseInt(m[2] as string, 16) - Number.parseInt(m[1] as string, 16) === 3 * 2 ** 20);
  if (!region) return t.fail(`no 3 MiB anonymous mapping in\n${maps}`);
  const mem = await open(`/proc/${w.pid}/mem`, 'r+');
  try {
    await mem.write(Buffer.from('corrupt!'), 0, 8, Number.parseInt(region[1] as string, 16) + 2 * 2 ** 20 + 100);
  } finally {
    await mem.close();
  }
  const after = await waitFor(w.stats, (s) => s.verifiedPasses >= grown.verifiedPasses + 2, { what: 'two more passes' });
  t.true(after.corruptPages >= 1, `${after.corruptPages} corrupt pages counted`);
});

test.serial('bad options exit 2 with the reason', async (t) => {
  for (const [args, reason] of [
    [['--rss-mib', 'lots'], /--rss-mib wants an integer/],
    [['--rss-mib', '8', '--working-set-mib', '16'], /exceeds --rss-mib/],
    [['--dirty-mib-per-s', '1'], /needs memory to dirty/],
    [['--tick-ms', '0'], /--tick-ms wants an integer/],
    [['extra'], /unexpected argument/],
  ] as const) {
    const err = await run(bin, [...args]).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );
    t.is(err?.code, 2, args.join(' '));
    t.regex(err?.stderr ?? '', reason);
  }
});

test.serial('runc: after checkpoint and restore the count continues and the longest gap covers the downtime', async (t) => {
  const id = `ferry-workload-${process.pid}`;
  containers.push(id);
  // startRuncCounter builds its rootfs only when missing, so this one, with the workload in it, stays.
  await workloadRootfs(path.join(scratch, id, 'rootfs'));
  const bundle = await startRuncCounter(id, scratch, { argv: workloadArgv({ rssMib: 32, dirtyMibPerS: 8 }) });
  const stats = () => readWorkloadStats(async () => (await run('runc', ['exec', id, 'cat', WORKLOAD_STATS_FILE])).stdout);

  // 100 ticks (1 s) in: a workload that restarted instead of restoring could not show that count at once.
  const before = await waitFor(stats, (s) => s.count >= 100, { what: `${id} to reach 100 ticks` });
  const images = path.join(scratch, 'images');
  const work = path.join(scratch, 'work');
  const t0 = performance.now();
  await execa('runc', ['checkpoint', '--image-path', images, '--work-path', work, id]);
  const checkpointMs = performance.now() - t0;
  t.is(await runcState(id), undefined, 'the checkpoint stopped the container');
  const t1 = performance.now();
  // stdio ignored: the restored container inherits it, and a pipe would keep execa waiting.
  await execa('runc', ['restore', '--detach', '--image-path', images, '--work-path', `${work}-r`, '--bundle', bundle, id], {
    stdio: 'ignore',
  });
  const restoreMs = performance.now() - t1;
  const wallMs = performance.now() - t0;
  const restoredAt = Date.now();

  const after = await waitFor(stats, (s) => s.nowMs > restoredAt, { what: 'a tick after restore' });
  t.true(after.count > before.count, `count ${after.count} after restore, ${before.count} before the checkpoint`);
  t.true(after.dirtiedMib > before.dirtiedMib, 'the dirtied total came back from memory');
  t.true(after.maxGapMs > before.maxGapMs, 'the longest gap is the one across the checkpoint');
  t.true(
    after.maxGapMs >= 50 && after.maxGapMs <= wallMs + 1000,
    `max gap ${after.maxGapMs} ms, checkpoint + restore ${wallMs.toFixed(1)} ms`,
  );
  const frozenMs = (await readDumpStats(path.join(work, 'stats-dump')))?.frozenTimeMs;
  t.true(frozenMs !== undefined && after.maxGapMs >= frozenMs, `max gap ${after.maxGapMs} ms covers CRIU's frozen time ${frozenMs} ms`);

  // Why the workload measures on CLOCK_REALTIME: CRIU restores into a time namespace of its own.
  const pid = JSON.parse((await run('runc', ['state', id])).stdout).pid as number;
  const timens = await readlink(`/proc/${pid}/ns/time`);
  const hostTimens = await readlink('/proc/self/ns/time');
  const offsets = await readFile(`/proc/${pid}/timens_offsets`, 'utf8').catch(() => '');
  t.log(
    `checkpoint ${checkpointMs.toFixed(1)} ms, restore ${restoreMs.toFixed(1)} ms, CRIU frozen ${frozenMs} ms, ` +
      `workload's max gap ${after.maxGapMs} ms; restored time ns ${timens} (host ${hostTimens}), offsets ${offsets.replace(/\s+/g, ' ').trim()}`,
  );
});
