/**
 * ferry-runc on real containerd (Debian's 1.6, one private instance per node, each in its own network
 * namespace): containers created through it run as with runc; a container whose OCI annotations carry
 * ferry.dev/restore-from is restored from the node agent's image store instead, adopted by containerd's
 * shim, and keeps counting from where the checkpoint on the other node left it. Driven with ctr; the CRI
 * path (pod sandboxes, as kubelet drives it) is the next slice of issue 6.
 */
import test from 'ava';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { IMAGE } from '../agent/test/runtimes/harness.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { type ContainerdNode, importFromPodman, startContainerd } from './support/containerd.js';
import { COUNTER_ARGV, countOf, importBusyboxImage, waitFor } from './support/workload.js';

/** podman's name for IMAGE, which its archive carries into containerd. */
const CTR_IMAGE = 'localhost/ferry-busybox:latest';
let scratch: string;
let cluster: TestCluster;
const containerd = new Map<string, ContainerdNode>();

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-ctd-'));
  // The agents reach runc where each node's containerd keeps it (decided before either starts).
  const runcRoot = (node: string) => path.join(scratch, node, 'runc', 'default');
  cluster = await startTestCluster(`ctd${process.pid % 100000}`, ['a', 'b'], {
    runtimes: ['runc'],
    subnet: `10.87.${process.pid % 250}.0/24`,
    agentArgs: (n) => ['--runc-root', runcRoot(n)],
  });
  for (const n of ['a', 'b']) {
    const c = await startContainerd(cluster.net, n, path.join(scratch, n), { imageStore: path.join(cluster.node(n).stateDir, 'images') });
    if (c.runcRoot !== runcRoot(n)) throw new Error(`containerd on ${n} keeps runc state in ${c.runcRoot}`);
    containerd.set(n, c);
  }
  await importBusyboxImage('podman', IMAGE, scratch);
  await importFromPodman([...containerd.values()], IMAGE, scratch);
});

test.after.always(async () => {
  for (const c of containerd.values()) await c.stop().catch(() => undefined);
  await cluster?.destroy();
  await rm(scratch, { recursive: true, force: true });
});

const node = (n: string) => containerd.get(n) as ContainerdNode;

/** The count the container's shell last wrote, read through its task's root. */
async function count(n: string, id: string): Promise<number> {
  const task = await node(n).task(id);
  if (task?.status !== 'RUNNING') return Number.NaN;
  return countOf(task.pid);
}

test.serial('a container checkpointed on a is restored by containerd on b through ferry-runc and keeps counting', async (t) => {
  // Created through ferry-runc without the annotation: runc, unchanged.
  await node('a').run(CTR_IMAGE, 'counter-a', COUNTER_ARGV);
  await waitFor(
    () => count('a', 'counter-a'),
    (c) => c >= 20,
    { what: 'counter-a to count on a' },
  );
  const listed = await cluster.node('a').agent.containers('runc');
  t.truthy(
    listed.find((c) => c.id === 'counter-a'),
    "the agent on a sees containerd's container through containerd's runc root",
  );

  const before = await count('a', 'counter-a');
  const ck = await cluster.node('a').agent.checkpoint({ runtime: 'runc', container: 'counter-a' });
  await waitFor(
    () => node('a').task('counter-a'),
    (s) => s?.status === 'STOPPED',
    { what: 'containerd on a to see the checkpointed task end' },
  );
  await cluster.node('a').agent.send(ck.id, { url: cluster.node('b').url, token: cluster.node('b').token });

  // A new container on b, created from the image with a different command: the annotation makes it the
  // checkpointed process instead.
  await node('b').run(CTR_IMAGE, 'counter-b', ['sleep', '1000'], { 'ferry.dev/restore-from': ck.id });
  const task = await node('b').task('counter-b');
  t.is(task?.status, 'RUNNING');
  const cmdline = (await readFile(`/proc/${task?.pid}/cmdline`, 'utf8')).split('\0').join(' ');
  t.regex(cmdline, /while true/, 'the process on b is the restored counter, not the command given to ctr run');
  const first = await count('b', 'counter-b');
  t.true(first >= before, `the count resumes from the checkpoint (${first} after ${before} on a), not from 0`);
  await waitFor(
    () => count('b', 'counter-b'),
    (c) => c > first,
    { what: 'counter-b to keep counting' },
  );

  // The shim adopted the restored process: containerd sees it die and deletes it like any task.
  await node('b').ctr(['task', 'kill', '-s', 'KILL', 'counter-b']);
  await waitFor(
    () => node('b').task('counter-b'),
    (s) => s?.status === 'STOPPED',
    { what: 'containerd on b to see counter-b exit' },
  );
  await node('b').ctr(['task', 'delete', 'counter-b']);
});

test.serial('an annotation naming a checkpoint this node does not have: ctr run fails saying so, nothing runs', async (t) => {
  const err = await t.throwsAsync(node('b').run(CTR_IMAGE, 'ghost', ['sleep', '1000'], { 'ferry.dev/restore-from': 'ck-missing' }));
  t.regex(err?.message ?? '', /checkpoint ck-missing is not in the image store/);
  t.is((await node('b').task('ghost'))?.status, undefined);
});

test.serial('an annotation that is not a checkpoint id is refused before anything is read', async (t) => {
  const err = await t.throwsAsync(node('b').run(CTR_IMAGE, 'escape', ['sleep', '1000'], { 'ferry.dev/restore-from': '../../etc' }));
  t.regex(err?.message ?? '', /must be a checkpoint id/);
});
