/**
 * How the policy scheduler scales: a real controller (its HTTP API, scheduler and SQLite store, in this
 * process) drives SIMULATED agents (e2e/bench/support/simulated-agent.ts: they answer like agents but run
 * no CRIU), with --policies policies of --containers containers each, every --every. Prints the scheduling
 * lag (how late each run started after it was due: p50/p99/max), runs per second, and the controller's
 * memory. Goal (issue 5): p99 lag under 1 s for 1000 policies x 10 containers.
 *
 *   npx tsx e2e/bench/policy-scheduler.ts [--policies 1000] [--containers 10] [--nodes 10] [--every 10s] [--seconds 60] [--checkpoint-ms 50]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ControllerClient } from '../../controller/src/client.js';
import { controllerConfig } from '../../controller/src/config.js';
import { startController } from '../../controller/src/main.js';
import type { PolicyRun } from '../../controller/src/policy/types.js';
import { SimulatedAgent } from './support/simulated-agent.js';

const { values } = parseArgs({
  options: {
    policies: { type: 'string', default: '1000' },
    containers: { type: 'string', default: '10' },
    nodes: { type: 'string', default: '10' },
    every: { type: 'string', default: '10s' },
    seconds: { type: 'string', default: '60' },
    'checkpoint-ms': { type: 'string', default: '50' },
    out: { type: 'string', default: 'bench-policies.json' },
  },
});
const policies = Number(values.policies);
const perPolicy = Number(values.containers);
const nodeCount = Number(values.nodes);
const seconds = Number(values.seconds);
const checkpointMs = Number(values['checkpoint-ms']);
for (const [flag, v] of Object.entries({ policies, containers: perPolicy, nodes: nodeCount, seconds })) {
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${flag} wants a positive integer`);
}
const GOAL_P99_MS = 1_000;

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] as number) : Number.NaN;
};

const scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-bench-policies-'));
const token = 'bench-token';
// Container j of policy i lives on node (i*perPolicy + j) % nodes: every policy spans several nodes.
const agents = Array.from({ length: nodeCount }, (_, n) => {
  const names: string[] = [];
  for (let i = 0; i < policies; i++)
    for (let j = 0; j < perPolicy; j++) if ((i * perPolicy + j) % nodeCount === n) names.push(`p${i}-c${j}`);
  return new SimulatedAgent({ node: `sim${n}`, token, containers: names, checkpointMs });
});
const controller = await startController(
  controllerConfig({ listen: '127.0.0.1:0', token, database: path.join(scratch, 'controller.db'), healthCheckMs: 5_000 }),
  false,
);
const client = new ControllerClient(controller.url, token);
try {
  for (const a of agents) await client.registerNode(a.node, await a.start(), token);
  const heapBefore = process.memoryUsage();
  const t0 = Date.now();
  for (let i = 0; i < policies; i++) {
    await client.applyPolicy({
      metadata: { name: `p${i}` },
      spec: { selector: { names: [`p${i}-c*`], runtime: 'runc' }, schedule: { every: values.every as string }, retention: { keepLast: 3 } },
    });
  }
  const applyMs = Date.now() - t0;
  let peakRss = 0;
  const sampler = setInterval(() => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
  }, 500);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  clearInterval(sampler);
  await controller.policies.stop();

  const runs: PolicyRun[] = [];
  for (let i = 0; i < policies; i++) runs.push(...(await client.policyRuns(`p${i}`)));
  const scheduled = runs.filter((r) => r.trigger === 'schedule' && r.lagMs !== undefined);
  const lags = scheduled.map((r) => r.lagMs as number);
  const failed = runs.filter((r) => r.status !== 'succeeded');
  const checkpoints = runs.reduce((n, r) => n + r.checkpoints.length, 0);
  const kept = agents.reduce((n, a) => n + a.stored(), 0);
  const result = {
    date: new Date().toISOString(),
    cpus: os.cpus().length,
    policies,
    containersPerPolicy: perPolicy,
    nodes: nodeCount,
    every: values.every,
    seconds,
    simulatedCheckpointMs: checkpointMs,
    applyMs,
    runs: runs.length,
    scheduledRuns: scheduled.length,
    failedRuns: failed.length,
    checkpoints,
    keptOnAgents: kept,
    lagMs: { p50: percentile(lags, 50), p99: percentile(lags, 99), max: Math.max(...lags) },
    rssMiB: { before: Math.round(heapBefore.rss / 2 ** 20), peak: Math.round(peakRss / 2 ** 20) },
    heapUsedMiB: Math.round(process.memoryUsage().heapUsed / 2 ** 20),
  };
  console.log(
    `policy scheduler: ${policies} policies x ${perPolicy} containers on ${nodeCount} SIMULATED agents, every ${values.every}, ${seconds} s (${os.cpus().length} CPUs)`,
  );
  console.log(
    `applied in ${applyMs} ms; ${runs.length} runs (${failed.length} not succeeded), ${checkpoints} checkpoints, ${kept} kept on agents (keepLast 3 each: at most ${policies * perPolicy * 3})`,
  );
  console.log(`lag behind schedule ms: p50 ${result.lagMs.p50}, p99 ${result.lagMs.p99}, max ${result.lagMs.max}`);
  console.log(`controller process memory: rss ${result.rssMiB.before} MiB before the policies, peak ${result.rssMiB.peak} MiB`);
  console.log(`goal p99 lag < ${GOAL_P99_MS} ms: ${result.lagMs.p99 < GOAL_P99_MS ? 'met' : 'NOT met'}`);
  if (failed.length) console.log(`first failure: ${JSON.stringify(failed[0]?.error ?? failed[0]?.message)}`);
  await writeFile(values.out as string, JSON.stringify(result, null, 1));
} finally {
  await controller.close();
  await Promise.all(agents.map((a) => a.stop()));
  await rm(scratch, { recursive: true, force: true });
}
