/**
 * The podman driver against real podman and CRIU: the shared runtime conformance tests (a counting
 * container checkpointed and restored, refusals, corrupt images), plus what is podman's own: CRIU's log from
 * the container's userdata directory when a dump fails, and pre-dumps on a kernel without soft-dirty tracking.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdir, readdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { waitFor } from '../../../e2e/support/workload.js';
import { isFerryError } from '../../src/errors.js';
import { PodmanDriver } from '../../src/runtimes/podman.js';
import { conformanceTests } from './conformance.js';
import { codeOf, IMAGE, runtimeHarness } from './harness.js';

const h = runtimeHarness(test, new PodmanDriver(), 'podman');
const { driver } = h;

conformanceTests(test, h, { criuStats: true, criuLog: true, frozenFilesystem: true });

/**
 * A podman whose CRIU fails while dumping memory: CRIU's fault injection 3 (FI_DUMP_PAGES), set by a `criu`
 * that podman's runc finds first in PATH. The driver only sees a different podman binary.
 */
const which = async (cmd: string) => (await execa('sh', ['-c', `command -v ${cmd}`])).stdout.trim();

async function podmanWithFailingDump(): Promise<string> {
  const bin = path.join(h.scratch(), 'failing-criu');
  await mkdir(bin, { recursive: true });
  await writeFile(path.join(bin, 'criu'), `#!/bin/sh\nCRIU_FAULT=3 exec ${await which('criu')} "$@"\n`, { mode: 0o755 });
  const podman = path.join(h.scratch(), 'podman-with-failing-criu');
  await writeFile(podman, `#!/bin/sh\nPATH=${bin}:$PATH exec ${await which('podman')} "$@"\n`, { mode: 0o755 });
  return podman;
}

test.serial('podman: a failed dump reports criu_failed with the log from userdata/dump.log; the container keeps running', async (t) => {
  const name = await h.counter('dumpfail');
  const failing = new PodmanDriver({ binary: await podmanWithFailingDump() });
  const dir = await h.checkpointDir('dumpfail');
  const err = await t.throwsAsync(failing.checkpoint({ container: await h.found(name), dir, leaveRunning: false }));
  t.is(codeOf(err), 'criu_failed', err?.message);
  const criuLog = isFerryError(err) ? (err.criuLog ?? []) : [];
  t.true(
    criuLog.some((l) => /Dumping FAILED/.test(l)),
    `criuLog names CRIU's error: ${criuLog.join('\n')}`,
  );
  t.false(
    criuLog.some((l) => /RLIMIT_NOFILE/.test(l)),
    'the harmless rlimit complaint is dropped',
  );
  t.deepEqual(await readdir(dir), [], 'no export archive is left behind');
  const before = await h.count(name);
  await waitFor(
    () => h.count(name),
    (n) => n > before,
    { what: 'the container to keep counting' },
  );
});

test.serial('podman: pre-dump: unsupported without soft-dirty tracking, else images under checkpoint/', async (t) => {
  const tracking = await execa('criu', ['check', '--feature', 'mem_dirty_track'], { reject: false });
  const name = await h.counter('predump');
  const dir = await h.checkpointDir('predump');
  const run = driver.checkpoint({ container: await h.found(name), dir, leaveRunning: true, preDump: true });
  if (tracking.exitCode === 0) {
    await run;
    t.truthy(await stat(path.join(dir, 'checkpoint', 'inventory.img')));
  } else {
    const err = await t.throwsAsync(run);
    t.is(codeOf(err), 'unsupported');
    t.regex(isFerryError(err) ? (err.hint ?? '') : '', /CONFIG_MEM_SOFT_DIRTY/);
  }
  t.is((await driver.find(name))?.state, 'running');
});

test.serial('podman: labels set at creation are listed and found', async (t) => {
  const name = h.track(`ferry-podman-labels-${process.pid}`);
  await execa('podman', ['run', '-d', '--name', name, '--label', 'ferry.test/policy=gold', '--label', 'empty=', IMAGE, 'sleep', '600']);
  const labels = { 'ferry.test/policy': 'gold', empty: '' };
  t.deepEqual((await driver.list()).find((c) => c.name === name)?.labels, labels);
  t.deepEqual((await driver.find(name))?.labels, labels);
});
