/**
 * The main job, on one machine: two nodes (network namespaces joined by a bridge, real TCP), a Ferry agent
 * on each, a controller, and a busybox container on node a that counts in memory. `ferry migrate` moves it
 * to node b while printing each step; the count then continues on b from where it was on a.
 *
 *   npm run demo            (scripts/demo.sh: host setup first, then this)
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startTestCluster } from '../support/cluster.js';
import { runcCount, runcRemove, runcState, startRuncCounter } from '../support/runc.js';
import { waitFor } from '../support/workload.js';

const FERRY = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s: string) => console.log(`\n${bold(`== ${s}`)}`);
const run = promisify(execFile);

const id = 'ferry-demo-counter';
const scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-demo-'));
say('two nodes as network namespaces, an agent on each, and a controller');
const cluster = await startTestCluster('demo', ['a', 'b'], { runtimes: ['runc'], subnet: '10.76.0.0/24' });
const a = cluster.node('a');
const b = cluster.node('b');
try {
  for (const n of [a, b]) console.log(`node ${n.name}: agent at ${n.url}`);
  const ctl = cluster.client();
  console.log(`controller at ${ctl.url}`);
  await run(process.execPath, [FERRY, '--controller', ctl.url, '--controller-token', cluster.controllerToken, 'nodes'], {
    env: process.env,
  }).then(({ stdout }) => console.log(stdout.trimEnd()));

  say('a busybox container on node a that counts in memory');
  await startRuncCounter(id, scratch, { root: a.runcRoot });
  const before = await waitFor(
    () => runcCount(id, a.runcRoot),
    (n) => n >= 20,
    { what: 'the counter to count' },
  );
  console.log(`count on node a: ${before}`);

  say(`ferry migrate ${id} --from a --to b`);
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        FERRY,
        '--controller',
        ctl.url,
        '--controller-token',
        cluster.controllerToken,
        'migrate',
        id,
        '--from',
        'a',
        '--to',
        'b',
        '-r',
        'runc',
      ],
      { stdio: 'inherit' },
    );
    child.on('error', reject);
    child.on('exit', (c) => resolve(c ?? 1));
  });
  if (code !== 0) throw new Error(`ferry migrate exited with ${code}`);

  say('after the migration');
  console.log(`on node a: ${(await runcState(id, a.runcRoot)) ?? 'no such container'}`);
  const first = await runcCount(id, b.runcRoot);
  const later = await waitFor(
    () => runcCount(id, b.runcRoot),
    (n) => n > first,
    { what: 'the count to move on node b' },
  );
  console.log(`on node b: ${await runcState(id, b.runcRoot)}; count ${first}, then ${later}: it continued from ${before}, not from 1`);
} finally {
  for (const n of [a, b]) await runcRemove(id, n.runcRoot);
  await cluster.destroy();
  await rm(scratch, { recursive: true, force: true });
}
