/**
 * What keeping checkpoints compressed and encrypted costs (issue 7): the same running container (the
 * workload with N MiB of memory) checkpointed (leave-running) and restored as a copy by agents that keep
 * checkpoints plain, gzip, zstd, AES-256-GCM, and zstd + AES-256-GCM, modes interleaved round by round so
 * that drift on the machine hits all alike. Throughput is the checkpoint's plain bytes over the wall time
 * of the call (CRIU, hashing, encoding, fsync). --fill random (the default) is the worst case for
 * compression: it pays the effort and saves nothing; --fill compressible (small integers, about 4:1)
 * stands for heaps that compress.
 *
 *   npm run bench:at-rest -- [--rounds 5] [--rss-mib 64] [--fill random|compressible] [--out bench-at-rest.json]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { AgentConfig } from '../../agent/src/config.js';
import type { Manifest } from '../../agent/src/store/manifest.js';
import { startTestAgent, type TestAgent } from '../support/agent.js';
import { runcCount, runcRemove, startRuncCounter } from '../support/runc.js';
import { workloadArgv, workloadRootfs } from '../support/workload-bin.js';
import { waitFor } from '../support/workload.js';
import { elapsedMs, median } from './support/stats.js';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    'rss-mib': { type: 'string', default: '64' },
    fill: { type: 'string', default: 'random' },
    out: { type: 'string', default: 'bench-at-rest.json' },
  },
});
const rounds = Number(values.rounds);
const rssMib = Number(values['rss-mib']);
const fill = values.fill === 'compressible' ? 'compressible' : 'random';

interface Mode {
  name: string;
  config: (keyFile: string) => Partial<AgentConfig>;
}

const MODES: Mode[] = [
  { name: 'plain', config: () => ({}) },
  { name: 'gzip', config: () => ({ compression: 'gzip' }) },
  { name: 'zstd', config: () => ({ compression: 'zstd' }) },
  { name: 'aes-256-gcm', config: (key) => ({ imageKeyPath: key }) },
  { name: 'zstd + aes-256-gcm', config: (key) => ({ compression: 'zstd', imageKeyPath: key }) },
];

interface Sample {
  checkpointMs: number;
  restoreMs: number;
  plainBytes: number;
  storedBytes: number;
}

const plainBytesOf = (m: Manifest) => m.files.reduce((n, f) => n + (f.plain?.size ?? f.size), 0);

async function sample(agent: TestAgent, container: string, copy: string): Promise<Sample> {
  const t0 = performance.now();
  const m = await agent.client.checkpoint({ runtime: 'runc', container, leaveRunning: true });
  const checkpointMs = elapsedMs(t0);
  const t1 = performance.now();
  await agent.client.restore(m.id, { name: copy });
  const restoreMs = elapsedMs(t1);
  await runcRemove(copy);
  await agent.client.deleteCheckpoint(m.id);
  return { checkpointMs, restoreMs, plainBytes: plainBytesOf(m), storedBytes: m.totalBytes };
}

const scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-bench-at-rest-'));
const keyFile = path.join(scratch, 'image.key');
await writeFile(keyFile, randomBytes(32), { mode: 0o600 });
const container = `bench-at-rest-${process.pid}`;
const agents = new Map<string, TestAgent>();
const samples = new Map<string, Sample[]>(MODES.map((m) => [m.name, []]));
try {
  for (const mode of MODES) agents.set(mode.name, await startTestAgent(['runc'], mode.config(keyFile)));
  await workloadRootfs(path.join(scratch, container, 'rootfs'));
  await startRuncCounter(container, scratch, { argv: workloadArgv({ rssMib, dirtyMibPerS: 0, fill }) });
  await waitFor(
    () => runcCount(container),
    (n) => n >= 10,
    { what: `${container} to fill its memory and count` },
  );
  for (let i = 0; i < rounds; i++) {
    for (const mode of MODES) {
      const s = await sample(agents.get(mode.name) as TestAgent, container, `${container}-copy`);
      samples.get(mode.name)?.push(s);
    }
    process.stderr.write(`round ${i + 1}/${rounds} done\n`);
  }
} finally {
  await runcRemove(`${container}-copy`);
  await runcRemove(container);
  await Promise.all([...agents.values()].map((a) => a.stop()));
  await rm(scratch, { recursive: true, force: true });
}

const MB = 1e6;
const rows = MODES.map((mode) => {
  const s = samples.get(mode.name) ?? [];
  const plain = median(s.map((x) => x.plainBytes));
  const checkpointMs = median(s.map((x) => x.checkpointMs));
  const restoreMs = median(s.map((x) => x.restoreMs));
  return {
    mode: mode.name,
    checkpointMs,
    restoreMs,
    storedMiB: median(s.map((x) => x.storedBytes)) / 2 ** 20,
    writeMBps: plain / MB / (checkpointMs / 1000),
    readMBps: plain / MB / (restoreMs / 1000),
  };
});
const base = rows[0];
console.log(
  `Checkpoints kept at rest: ${rssMib} MiB workload filled ${fill}, medians of ${rounds} rounds (leave-running checkpoint, restore as a copy)`,
);
console.log('| mode                 | checkpoint ms | restore ms | stored MiB | checkpoint MB/s | restore MB/s | checkpoint x plain |');
console.log('| -------------------- | ------------- | ---------- | ---------- | --------------- | ------------ | ------------------ |');
for (const r of rows) {
  console.log(
    `| ${r.mode.padEnd(20)} | ${r.checkpointMs.toFixed(1).padStart(13)} | ${r.restoreMs.toFixed(1).padStart(10)} | ${r.storedMiB.toFixed(1).padStart(10)} | ${r.writeMBps.toFixed(0).padStart(15)} | ${r.readMBps.toFixed(0).padStart(12)} | ${(r.checkpointMs / (base?.checkpointMs ?? 1)).toFixed(2).padStart(18)} |`,
  );
}
await writeFile(values.out, JSON.stringify({ rounds, rssMib, fill, samples: Object.fromEntries(samples), rows }, null, 2));
