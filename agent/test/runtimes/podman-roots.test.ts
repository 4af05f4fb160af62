/**
 * Two podman stores on one machine, as two Ferry nodes there have them (agent --podman-root): neither sees
 * the other's containers, and a checkpoint exported from one restores in the other as on another machine,
 * under the original name and id, once the image is there with the same id. Also an agent started on a
 * private root: its API lists that store and nothing else.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startTestAgent } from '../../../e2e/support/agent.js';
import { removePodmanStores } from '../../../e2e/support/podman-store.js';
import {
  busyboxRootfs,
  COUNT_FILE,
  COUNTER_ARGV,
  expectCountResumed,
  importBusyboxImage,
  readCount,
  waitFor,
} from '../../../e2e/support/workload.js';
import { agentConfig } from '../../src/config.js';
import { isFerryError } from '../../src/errors.js';
import { defaultPodmanRunroot, PodmanDriver, podmanStoreArgs } from '../../src/runtimes/podman.js';
import { codeOf, IMAGE, timed } from './harness.js';

interface Store {
  root: string;
  args: string[];
  driver: PodmanDriver;
}

let scratch = '';
const stores: Store[] = [];

function store(i: number): Store {
  const s = stores[i];
  if (!s) throw new Error(`no store ${i}: test.before failed`);
  return s;
}

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-podman-roots-'));
  for (const name of ['a', 'b']) {
    const root = path.join(scratch, name);
    const args = podmanStoreArgs(root);
    stores.push({ root, args, driver: new PodmanDriver({ extraArgs: args }) });
  }
  await importBusyboxImage('podman', IMAGE, scratch, store(0).args);
});

test.after.always(async () => {
  if (!scratch) return;
  await removePodmanStores(stores);
  await rm(scratch, { recursive: true, force: true });
});

const count = (s: Store, name: string) => readCount(() => s.driver.exec(name, ['cat', COUNT_FILE]));

async function counter(s: Store, what: string): Promise<string> {
  const name = `ferry-roots-${what}-${process.pid}`;
  await execa('podman', [...s.args, 'run', '-d', '--name', name, IMAGE, ...COUNTER_ARGV]);
  await waitFor(
    () => count(s, name),
    (n) => n >= 3,
    { what: `${name} to count` },
  );
  return name;
}

test('config: a private podman store is opt-in, its paths absolute; a runroot needs its root', (t) => {
  t.false('podmanRoot' in agentConfig({ token: 't' }), 'no flag, the host store as before');
  const cfg = agentConfig({ token: 't', podmanRoot: 'nodes/a' });
  t.is(cfg.podmanRoot, path.resolve('nodes/a'));
  t.deepEqual(podmanStoreArgs('nodes/a'), podmanStoreArgs(path.resolve('nodes/a')), 'the same store whatever the cwd spelling');
  t.deepEqual(podmanStoreArgs('/n/a', '/run/n-a'), ['--root', '/n/a', '--runroot', '/run/n-a', '--tmpdir', '/run/n-a/libpod']);
  t.not(defaultPodmanRunroot('/n/a'), defaultPodmanRunroot('/n/b'));
  t.throws(() => agentConfig({ token: 't', podmanRunroot: '/run/x' }), { message: /--podman-runroot needs --podman-root/ });
});

test.serial('a checkpoint from store A restores in store B, which never saw the container', async (t) => {
  const [a, b] = [store(0), store(1)];
  const name = await counter(a, 'moved');
  t.is(await b.driver.find(name), undefined, 'B does not see A');
  t.false((await b.driver.list()).some((c) => c.name === name));
  const container = await a.driver.find(name);
  if (!container) throw new Error(`A lost ${name}`);

  const dir = await mkdtemp(path.join(scratch, 'checkpoint-'));
  const atCheckpoint = await count(a, name);
  const [outcome, checkpointMs] = await timed(() => a.driver.checkpoint({ container, dir, leaveRunning: false }));
  t.is((await a.driver.find(name))?.state, 'stopped');
  const restore = () => b.driver.restore({ dir, runtimeMeta: outcome.runtimeMeta, verified: Promise.resolve() });

  // B builds the image itself: same name and content, another id (import stamps the time into the config).
  const rootfs = await busyboxRootfs(path.join(scratch, 'busybox-rootfs'));
  await execa('tar', ['-C', rootfs, '-c', '.']).pipe('podman', [...b.args, 'import', '-', IMAGE]);
  const otherId = await t.throwsAsync(restore());
  t.is(codeOf(otherId), 'runtime_failed', otherId?.message);
  t.regex(otherId?.message ?? '', /not with the checkpoint's image id/);
  t.regex(isFerryError(otherId) ? (otherId.hint ?? '') : '', /same id/);
  t.deepEqual(await b.driver.list(), [], 'the refused restore left nothing in B');

  await execa('podman', [...b.args, 'rmi', IMAGE]);
  await importBusyboxImage('podman', IMAGE, scratch, b.args);
  const [restored, restoreMs] = await timed(restore);
  t.log(`private roots: checkpoint ${checkpointMs} ms, restore ${restoreMs} ms`);
  t.like(restored.container, { id: container.id, name, state: 'running' }, 'B has no such name, so the original name and id are kept');
  await expectCountResumed(() => count(b, name), atCheckpoint);
  t.is((await a.driver.find(name))?.state, 'stopped', 'the original stays stopped in A');
  t.false(
    (await a.driver.list()).some((c) => c.state === 'running'),
    'nothing runs in A',
  );
});

test.serial('an agent on a private podman root lists that store only', async (t) => {
  const [a, b] = [store(0), store(1)];
  await importBusyboxImage('podman', IMAGE, scratch, b.args);
  const mine = await counter(b, 'listed');
  const theirs = await counter(a, 'elsewhere');
  const agent = await startTestAgent(['podman'], { podmanRoot: b.root });
  try {
    const names = (await agent.client.containers('podman')).map((c) => c.name).sort();
    t.true(names.includes(mine), names.join(', '));
    t.false(names.includes(theirs));
    t.deepEqual(names, (await b.driver.list()).map((c) => c.name).sort());
  } finally {
    await agent.stop();
  }
});
