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
import type { MigrationEvent } from '../controller/src/migration/types.js';
import { onSlowLink, whenWriting } from './support/faults.js';
import { podmanCount, podmanOn, podmanState, startPodmanCounter } from './support/podman-node.js';
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

test.serial('podman: a counting container moves from a to b into a twin, with its files; the source is removed', async (t) => {
  const name = `mig-podman-${process.pid}`;
  const before = await startPodmanCounter(cluster, 'a', name, IMAGE);
  // Its writable layer: a file written, and one of the image's deleted (a whiteout).
  await podmanOn(cluster, 'a', ['exec', name, 'sh', '-c', 'echo kept > /marker && rm /bin/true']);

  const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'podman', name }, targetNode: 'b' });
  const events: MigrationEvent[] = [];
  for await (const e of cluster.client().events(accepted.id)) events.push(e);
  const m = await cluster.client().migration(accepted.id);
  t.is(m.status, 'succeeded', JSON.stringify(m.error));
  t.is(m.strategy?.used, 'stopcopy');
  t.truthy(m.target.twinId, 'the final dump went into a twin prepared on b');
  t.true(events.some((e) => /^twin \w+ prepared on b/.test(e.message)));
  await expectCountResumed(() => countOn('b', name), before);
  t.is((await podmanOn(cluster, 'b', ['exec', name, 'cat', '/marker'])).stdout, 'kept');
  const deleted = await podmanOn(cluster, 'b', ['exec', name, 'ls', '/bin/true']).catch((err: Error) => err);
  t.true(deleted instanceof Error, '/bin/true stays deleted on b');
  t.is(await stateOn('a', name), undefined, 'the source container is gone');
  t.is(await stateOn('b', name), 'running');
  t.true((m.figures.frozenTimeMs ?? 0) > 0);
  t.log(`downtime ${m.figures.downtimeMs} ms (CRIU frozen ${m.figures.frozenTimeMs} ms), total ${m.figures.totalMs} ms`);
});

test.serial('podman: cancelled after the in-place dump, the source is restored in place and the twin removed', async (t) => {
  const name = `mig-podman-cancel-${process.pid}`;
  const before = await startPodmanCounter(cluster, 'a', name, IMAGE);
  const incoming = whenWriting(cluster, 'b', '.partial-import-');
  // A slow link keeps the transfer going long enough for the cancellation to land before the restore.
  const m = await onSlowLink(cluster, async () => {
    const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'podman', name }, targetNode: 'b' });
    await incoming.started;
    await cluster.client().cancel(accepted.id);
    return cluster.finished(accepted.id);
  }).finally(() => incoming.close());
  t.is(m.status, 'cancelled', JSON.stringify(m.error));
  t.truthy(m.target.twinId);
  t.regex(m.rollback?.outcome ?? '', /restored in place on a/);
  await expectCountResumed(() => countOn('a', name), before);
  t.is(await stateOn('a', name), 'running');
  t.is(await stateOn('b', name), undefined, 'the twin is gone from b');
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
