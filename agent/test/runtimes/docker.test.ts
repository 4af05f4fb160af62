/**
 * The docker driver against real dockerd (started by scripts/services.sh) and CRIU: the shared runtime
 * conformance tests, plus what is docker's own: no pre-dump in the Engine API, and the writable layer
 * carried beside the checkpoint.
 */
import test from 'ava';
import { execa } from 'execa';
import { DockerDriver } from '../../src/runtimes/docker.js';
import { conformanceTests } from './conformance.js';
import { codeOf, IMAGE, runtimeHarness } from './harness.js';

const h = runtimeHarness(test, new DockerDriver(), 'docker');

test.serial('docker: the driver reports dockerd with experimental checkpoints', async (t) => {
  const status = await h.driver.status();
  t.true(status.available, status.reason);
  t.regex(status.version ?? '', /^\d+\.\d+/);
});

conformanceTests(test, h, { criuStats: false, criuLog: false, frozenFilesystem: false });

test.serial('docker: pre-dump is refused as unsupported; the container keeps running', async (t) => {
  const name = await h.counter('predump');
  const dir = await h.checkpointDir('predump');
  const err = await t.throwsAsync(h.driver.checkpoint({ container: await h.found(name), dir, leaveRunning: true, preDump: true }));
  t.is(codeOf(err), 'unsupported');
  t.is((await h.driver.find(name))?.state, 'running');
});

test.serial('docker: files the container wrote travel with the checkpoint', async (t) => {
  const name = await h.counter('rootfs');
  await execa('docker', ['exec', name, 'sh', '-c', 'echo kept > /etc/ferry-note']);
  const dir = await h.checkpointDir('rootfs');
  const outcome = await h.driver.checkpoint({ container: await h.found(name), dir, leaveRunning: true });
  const copy = h.track(`${name}-copy`);
  await h.driver.restore({ dir, name: copy, runtimeMeta: outcome.runtimeMeta, verified: Promise.resolve() });
  t.is((await h.driver.exec(copy, ['cat', '/etc/ferry-note'])).trim(), 'kept');
});

test.serial('docker: labels set at creation are listed and found', async (t) => {
  const name = h.track(`ferry-docker-labels-${process.pid}`);
  await execa('docker', ['run', '-d', '--name', name, '--label', 'ferry.test/policy=gold', '--label', 'empty=', IMAGE, 'sleep', '600']);
  const labels = { 'ferry.test/policy': 'gold', empty: '' };
  t.deepEqual((await h.driver.list()).find((c) => c.name === name)?.labels, labels);
  t.deepEqual((await h.driver.find(name))?.labels, labels);
});
