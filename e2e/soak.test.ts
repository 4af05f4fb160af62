/**
 * Soak: a policy checkpoints several running containers every 2 s, keeping the last 3 of each, for a
 * while (3 minutes in CI; `npm run test:soak` runs 30). Real agent and controller processes, real CRIU
 * and runc. Sampled every 15 s: open file descriptors and resident memory of both processes, bytes in
 * the agent's image store, checkpoints listed, runs succeeded (from the controller's /metrics). After a warm-up, none may grow beyond what retention
 * explains: descriptors and memory stay near their first sample, the store near keepLast x containers
 * checkpoints. The samples are printed as a table.
 *
 *   FERRY_SOAK_SECONDS=1800 npx ava --timeout=40m e2e/soak.test.ts
 */
import test from 'ava';
import { readdir, readFile, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { sample } from './support/metrics.js';
import { runcRemove, startCounting } from './support/runc.js';

const SECONDS = Number(process.env.FERRY_SOAK_SECONDS ?? 180);
const SAMPLE_MS = 15_000;
const CONTAINERS = 3;
const KEEP = 3;
/** Descriptors a busy process may hold for requests in flight at the moment of a sample. */
const FD_SLACK = 24;
/** V8 grows its heap in steps and gives back lazily: growth under this is not a leak. */
const RSS_SLACK_MIB = 96;

let cluster: TestCluster;
let scratch: string;
const ids = Array.from({ length: CONTAINERS }, (_, i) => `soak-${i}-${process.pid}`);

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-soak-'));
  cluster = await startTestCluster(`s${process.pid % 100000}`, ['a'], { runtimes: ['runc'], subnet: `10.94.${process.pid % 250}.0/24` });
});

test.after.always(async () => {
  for (const id of ids) await runcRemove(id, cluster?.node('a').runcRoot);
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

interface Sample {
  atS: number;
  agentFds: number;
  agentRssMiB: number;
  controllerFds: number;
  controllerRssMiB: number;
  storeMiB: number;
  checkpoints: number;
  /** The largest checkpoint listed: what retention's bound on the store is made of. */
  largestMiB: number;
  runs: number;
}

async function processFigures(pid: number | undefined): Promise<{ fds: number; rssMiB: number }> {
  if (!pid) throw new Error('no pid to sample');
  const [fds, status] = await Promise.all([readdir(`/proc/${pid}/fd`), readFile(`/proc/${pid}/status`, 'utf8')]);
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
  return { fds: fds.length, rssMiB: rssKiB / 1024 };
}

async function takeSample(t0: number): Promise<Sample> {
  const a = cluster.node('a');
  const [agent, controller, du, checkpoints, runs] = await Promise.all([
    processFigures(a.process.child.pid),
    processFigures(cluster.controllerProcess().child.pid),
    execa('du', ['-sb', path.join(a.stateDir, 'images')]),
    a.agent.checkpoints(),
    cluster.client().metrics(),
  ]);
  return {
    atS: Math.round((performance.now() - t0) / 1000),
    agentFds: agent.fds,
    agentRssMiB: Math.round(agent.rssMiB),
    controllerFds: controller.fds,
    controllerRssMiB: Math.round(controller.rssMiB),
    storeMiB: Number(du.stdout.split('\t')[0]) / 2 ** 20,
    checkpoints: checkpoints.length,
    largestMiB: Math.max(0, ...checkpoints.map((m) => m.totalBytes)) / 2 ** 20,
    runs: sample(runs, 'ferry_controller_policy_runs_total', { status: 'succeeded' }) ?? 0,
  };
}

test.serial(`soak: ${CONTAINERS} containers checkpointed every 2 s for ${SECONDS} s, nothing grows beyond retention`, async (t) => {
  t.timeout((SECONDS + 180) * 1000);
  for (const id of ids) await startCounting(id, scratch, cluster.node('a').runcRoot);
  await cluster.client().applyPolicy({
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'CheckpointPolicy',
    metadata: { name: 'soak' },
    spec: { selector: { names: [`soak-*-${process.pid}`], runtime: 'runc' }, schedule: { every: '2s' }, retention: { keepLast: KEEP } },
  });
  const t0 = performance.now();
  const samples: Sample[] = [];
  // Sampling on a timer is the point here: the figures are read at regular times, nothing is awaited.
  while (performance.now() - t0 < SECONDS * 1000) {
    await new Promise((r) => setTimeout(r, Math.min(SAMPLE_MS, SECONDS * 1000 - (performance.now() - t0) + 1)));
    samples.push(await takeSample(t0));
  }
  await cluster.client().deletePolicy('soak');

  t.log(
    [
      '   s | agent fds | agent MiB | controller fds | controller MiB | store MiB | checkpoints | runs ok',
      ...samples.map(
        (s) =>
          `${String(s.atS).padStart(4)} | ${String(s.agentFds).padStart(9)} | ${String(s.agentRssMiB).padStart(9)} | ${String(s.controllerFds).padStart(14)} | ${String(s.controllerRssMiB).padStart(14)} | ${s.storeMiB.toFixed(1).padStart(9)} | ${String(s.checkpoints).padStart(11)} | ${String(s.runs).padStart(7)}`,
      ),
    ].join('\n'),
  );
  // The first sample is the warm-up's end: caches, pools and JIT are in place by then.
  const [first, ...rest] = samples;
  t.truthy(first);
  if (!first) return;
  const last = samples.at(-1) as Sample;
  t.true(last.runs >= (SECONDS / 2) * 0.5, `runs kept up: ${last.runs} in ${SECONDS} s at one per 2 s`);
  const largestMiB = Math.max(...samples.map((s) => s.largestMiB));
  for (const s of rest) {
    t.true(s.agentFds <= first.agentFds + FD_SLACK, `agent fds at ${s.atS} s: ${s.agentFds} (first ${first.agentFds})`);
    t.true(
      s.controllerFds <= first.controllerFds + FD_SLACK,
      `controller fds at ${s.atS} s: ${s.controllerFds} (first ${first.controllerFds})`,
    );
    t.true(
      s.agentRssMiB <= first.agentRssMiB + RSS_SLACK_MIB,
      `agent RSS at ${s.atS} s: ${s.agentRssMiB} MiB (first ${first.agentRssMiB})`,
    );
    t.true(
      s.controllerRssMiB <= first.controllerRssMiB + RSS_SLACK_MIB,
      `controller RSS at ${s.atS} s: ${s.controllerRssMiB} MiB (first ${first.controllerRssMiB})`,
    );
    // Retention: keepLast per container, plus one per container that may be in flight at the sample.
    t.true(s.checkpoints <= (KEEP + 1) * CONTAINERS, `checkpoints at ${s.atS} s: ${s.checkpoints}`);
    t.true(s.storeMiB <= (KEEP + 1) * CONTAINERS * largestMiB + 1, `store at ${s.atS} s: ${s.storeMiB.toFixed(1)} MiB`);
  }
});
