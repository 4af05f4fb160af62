/**
 * Ferry's checkpoint and restore wall time against raw `runc checkpoint` / `runc restore` of the same kind
 * of container (a busybox counter), alternating the two so that drift on the machine hits both alike.
 * Ferry's time is the client's: HTTP, CRIU via runc, rootfs capture, manifest hashing and fsync included.
 * Goal (issue 2): median ratio <= 1.10. Prints a table and writes the raw samples as JSON.
 *
 *   npm run bench:checkpoint -- [--rounds 15] [--out bench-checkpoint.json]
 */
import { execa } from 'execa';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readDumpStats } from '../../agent/src/criu/stats.js';
import { startTestAgent } from '../support/agent.js';
import { runcCount, runcRemove, startRuncCounter } from '../support/runc.js';
import { waitFor } from '../support/workload.js';
import { elapsedMs, median } from './support/stats.js';

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '15' }, out: { type: 'string', default: 'bench-checkpoint.json' } },
});
const rounds = Number(values.rounds);

interface Sample {
  checkpointMs: number;
  restoreMs: number;
  frozenMs: number;
  /** CRIU's wait for the cgroup freezer before it dumps; the container is stopped all the while. */
  freezingMs: number;
}

async function ready(id: string, scratch: string) {
  await startRuncCounter(id, scratch);
  await waitFor(
    () => runcCount(id),
    (n) => n >= 2,
    { what: `${id} to count` },
  );
}

async function rawRunc(scratch: string, i: number): Promise<Sample> {
  const id = `bench-raw-${i}`;
  await ready(id, scratch);
  const images = path.join(scratch, `raw-img-${i}`);
  const work = path.join(scratch, `raw-work-${i}`);
  const t0 = performance.now();
  await execa('runc', ['checkpoint', '--image-path', images, '--work-path', work, id]);
  const checkpointMs = elapsedMs(t0);
  const stats = await readDumpStats(path.join(work, 'stats-dump'));
  const t1 = performance.now();
  await execa('runc', ['restore', '--detach', '--image-path', images, '--work-path', `${work}-r`, '--bundle', path.join(scratch, id), id], {
    stdio: 'ignore',
  });
  const restoreMs = elapsedMs(t1);
  await runcRemove(id);
  return { checkpointMs, restoreMs, frozenMs: stats?.frozenTimeMs ?? Number.NaN, freezingMs: stats?.freezingTimeMs ?? Number.NaN };
}

async function ferry(client: Awaited<ReturnType<typeof startTestAgent>>['client'], scratch: string, i: number): Promise<Sample> {
  const id = `bench-ferry-${i}`;
  await ready(id, scratch);
  const t0 = performance.now();
  const m = await client.checkpoint({ runtime: 'runc', container: id });
  const checkpointMs = elapsedMs(t0);
  const t1 = performance.now();
  const r = await client.restore(m.id);
  const restoreMs = elapsedMs(t1);
  await runcRemove(r.container.name);
  await client.deleteCheckpoint(m.id);
  return {
    checkpointMs,
    restoreMs,
    frozenMs: m.stats?.frozenTimeMs ?? Number.NaN,
    freezingMs: m.stats?.freezingTimeMs ?? Number.NaN,
  };
}

const scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-bench-'));
const agent = await startTestAgent(['runc']);
const raw: Sample[] = [];
const ours: Sample[] = [];
try {
  // One warm-up of each, not counted: first runs pay for page cache and CRIU's kerndat probe.
  await rawRunc(scratch, -1);
  await ferry(agent.client, scratch, -1);
  for (let i = 0; i < rounds; i++) {
    raw.push(await rawRunc(scratch, i));
    ours.push(await ferry(agent.client, scratch, i));
    process.stderr.write(`\rround ${i + 1}/${rounds}`);
  }
  process.stderr.write('\n');
} finally {
  await agent.stop();
  await rm(scratch, { recursive: true, force: true });
}

const row = (name: string, f: (s: Sample) => number) => {
  const r = median(raw.map(f));
  const o = median(ours.map(f));
  return [name, r.toFixed(1), o.toFixed(1), (o / r).toFixed(3)];
};
const rows = [
  row('checkpoint wall ms', (s) => s.checkpointMs),
  row('restore wall ms', (s) => s.restoreMs),
  row('CRIU frozen ms', (s) => s.frozenMs),
  row('CRIU freezing ms', (s) => s.freezingMs),
];
const widths = [20, 12, 12, 8];
const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i] ?? 8)).join('');
console.log(`Ferry vs raw runc, busybox counter, ${rounds} rounds, medians (${os.cpus().length} CPUs, kernel ${os.release()})`);
console.log(line(['', 'raw runc', 'ferry', 'ratio']));
for (const r of rows) console.log(line(r));
const ckRatio = median(ours.map((s) => s.checkpointMs)) / median(raw.map((s) => s.checkpointMs));
const rsRatio = median(ours.map((s) => s.restoreMs)) / median(raw.map((s) => s.restoreMs));
console.log(
  `goal <= 1.10: checkpoint ${ckRatio <= 1.1 ? 'met' : 'NOT met'} (${ckRatio.toFixed(3)}), restore ${rsRatio <= 1.1 ? 'met' : 'NOT met'} (${rsRatio.toFixed(3)})`,
);
await writeFile(
  values.out as string,
  JSON.stringify({ date: new Date().toISOString(), kernel: os.release(), rounds, raw, ferry: ours }, null, 1),
);
console.log(`raw samples: ${values.out}`);
