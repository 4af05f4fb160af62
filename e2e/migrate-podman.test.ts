/**
 * Live migration of a podman container between two nodes (network namespaces, real agents each with a
 * podman store of its own, real CRIU): the count continues on the target, the source's container is gone.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { IMAGE } from '../agent/test/runtimes/harness.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { podmanCount, podmanState, startPodmanCounter } from './support/podman-node.js';
import { busyboxRootfs, expectCountResumed, importBusyboxImage } from './support/workload.js';

let cluster: TestCluster;
let scratch: string;
const tag = `p${process.pid % 100000}`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-migrate-podman-'));
  cluster = await startTestCluster(tag, ['a', 'b'], { runtimes: ['podman'], subnet: `10.81.${process.pid % 250}.0/24` });
  // podman restores onto the image id recorded in the checkpoint: both nodes get the same image.
  for (const n of ['a', 'b']) await importBusyboxImage('podman', IMAGE, scratch, cluster.node(n).podman.args);
});

test.after.always(async () => {
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const countOn = (node: string, name: string) => podmanCount(cluster, node, name);
const stateOn = (node: string, name: string) => podmanState(cluster, node, name);

test.serial('podman: a counting container moves from a to b and keeps counting; the source is removed', async (t) => {
  const name = `mig-podman-${process.pid}`;
  const before = await startPodmanCounter(cluster, 'a', name, IMAGE);

  const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'podman', name }, targetNode: 'b' });
  const m = await cluster.finished(accepted.id);
  t.is(m.status, 'succeeded', JSON.stringify(m.error));
  t.is(m.strategy?.used, 'stopcopy');
  await expectCountResumed(() => countOn('b', name), before);
  t.is(await stateOn('a', name), undefined, 'the source container is gone');
  t.is(await stateOn('b', name), 'running');
  t.true((m.figures.frozenTimeMs ?? 0) > 0);
  t.log(`downtime ${m.figures.downtimeMs} ms (CRIU frozen ${m.figures.frozenTimeMs} ms), total ${m.figures.totalMs} ms`);
});

test.serial('podman: an image missing on the target fails preflight; the container keeps running on a', async (t) => {
  // The same rootfs imported again gets another id (podman import records the time): b does not have it.
  const onlyOnA = `ferry-only-a-${process.pid}:latest`;
  const rootfs = await busyboxRootfs(path.join(scratch, 'only-a-rootfs'));
  await execa('sh', ['-c', `tar -C ${rootfs} -c . | podman ${cluster.node('a').podman.args.join(' ')} import - ${onlyOnA}`]);
  const name = `mig-noimage-${process.pid}`;
  const before = await startPodmanCounter(cluster, 'a', name, onlyOnA);

  const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'podman', name }, targetNode: 'b' });
  const m = await cluster.finished(accepted.id);
  t.is(m.status, 'failed');
  t.is(m.error?.step, 'preflight');
  t.is(m.error?.code, 'image_not_found', m.error?.message);
  t.regex(m.error?.hint ?? '', /save .* load/);
  t.regex(m.rollback?.outcome ?? '', /kept running on a/);
  await expectCountResumed(() => countOn('a', name), before);
  t.is(await stateOn('b', name), undefined);
});
