/**
 * The behaviour every runtime driver promises (types.ts), run against the real runtime: a checkpoint that
 * stops the container and a restore that resumes the count from memory; a leave-running checkpoint restored
 * beside the original; refusals of unknown and stopped containers; a restore that refuses to start before
 * verification, and one whose CRIU fails, leaving no container behind.
 */
import type { TestFn } from 'ava';
import { execa } from 'execa';
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { COUNT_FILE, expectCountResumed, waitFor } from '../../../e2e/support/workload.js';
import { isFerryError } from '../../src/errors.js';
import { codeOf, type RuntimeHarness, timed } from './harness.js';

export interface RuntimeFacts {
  /** CRIU's stats-dump/stats-restore reach the driver (docker's containerd deletes them). */
  criuStats: boolean;
  /** CRIU's log reaches the driver on failure. */
  criuLog: boolean;
  /**
   * A leave-running checkpoint captures the container's files in the same frozen instant as its memory.
   * docker's cannot: containerd refuses to checkpoint a frozen container (docs/architecture.md).
   */
  frozenFilesystem: boolean;
}

export function conformanceTests(test: TestFn, h: RuntimeHarness, facts: RuntimeFacts): void {
  const { driver } = h;
  const label = (what: string) => `${h.cli}: ${what}`;

  test.serial(label('checkpoint stops the container; restore resumes the count from memory'), async (t) => {
    const name = await h.counter('stop');
    const container = await h.found(name);
    t.is(container.state, 'running');
    const dir = await h.checkpointDir('stop');
    const written: string[] = [];

    const before = await h.count(name);
    const [outcome, checkpointMs] = await timed(() =>
      driver.checkpoint({ container, dir, leaveRunning: false, onWritten: (rel) => written.push(rel) }),
    );
    t.is((await driver.find(name))?.state, 'stopped');
    t.truthy(await stat(path.join(dir, 'checkpoint', 'inventory.img')));
    t.truthy(await stat(path.join(dir, 'config.dump')));
    t.true(written.includes('checkpoint'), "CRIU's images are handed to the store before the rest");
    t.is(new Set(written).size, written.length, 'each path is reported once');
    for (const rel of written) t.truthy(await stat(path.join(dir, rel)), `${rel} was reported and is there`);
    if (facts.criuStats) {
      t.truthy(await stat(path.join(dir, 'stats-dump')));
      t.true((outcome.stats?.frozenTimeMs ?? 0) > 0, 'CRIU frozen time is read from stats-dump');
      t.true((outcome.stats?.pagesWritten ?? 0) > 0);
      // CRIU's own cgroup freeze polls every 100 ms; the driver freezes first and CRIU starts at once.
      t.true((outcome.stats?.freezingTimeMs ?? 100) < 50, `CRIU found the container frozen (${outcome.stats?.freezingTimeMs} ms)`);
    } else {
      t.is(outcome.stats, undefined, 'no figures are made up where CRIU left none');
    }
    t.like(outcome.runtimeMeta, { id: container.id, name });

    // The stopped original still holds its name, so the copy gets a fresh one.
    const [restored, restoreMs] = await timed(() => driver.restore({ dir, runtimeMeta: outcome.runtimeMeta, verified: Promise.resolve() }));
    h.track(restored.container.name);
    t.log(`checkpoint ${checkpointMs} ms, restore ${restoreMs} ms`);
    t.regex(restored.container.name, new RegExp(`^${name}-restored-[0-9a-f]{6}$`));
    t.is(restored.container.state, 'running');
    if (facts.criuStats) t.true((restored.stats?.restoreTimeMs ?? 0) > 0, 'CRIU restore time is reported');
    await expectCountResumed(() => h.count(restored.container.name), before);
  });

  test.serial(label('leave-running checkpoint restored under a new name: both keep counting'), async (t) => {
    const name = await h.counter('leave');
    const dir = await h.checkpointDir('leave');
    const atCheckpoint = await h.count(name);
    const outcome = await driver.checkpoint({ container: await h.found(name), dir, leaveRunning: true });
    const after = await h.count(name);
    await waitFor(
      () => h.count(name),
      (n) => n > after,
      { what: 'the original to keep counting' },
    );

    const copy = h.track(`${name}-copy`);
    const restored = await driver.restore({ dir, name: copy, runtimeMeta: outcome.runtimeMeta, verified: Promise.resolve() });
    t.is(restored.container.name, copy);
    t.is((await driver.find(name))?.state, 'running');
    t.is((await driver.find(copy))?.state, 'running');
    await expectCountResumed(() => h.count(copy), atCheckpoint);
  });

  const frozenTest = facts.frozenFilesystem ? test.serial : test.serial.skip;
  frozenTest(label('leave-running checkpoint of a container growing an open file: dump and rootfs agree'), async (t) => {
    // CRIU records the size of every open file (write-only appends, logs, excepted) and refuses a restore
    // whose file differs; a rootfs captured after the container was let go again would hold a longer file.
    // Growing a read-write file as fast as a shell can makes that race all but certain. The count is
    // written less often, to a new file renamed over the old one, so that a reader always finds it whole
    // (written in place, a loaded CI machine once read it empty for the whole two seconds a read waits).
    const grower = [
      '/bin/sh',
      '-c',
      `exec 3<>/tmp/grow; i=0; while true; do i=$((i+1)); echo $i >&3; [ $((i % 64)) = 0 ] && echo $i > ${COUNT_FILE}.new && mv ${COUNT_FILE}.new ${COUNT_FILE}; done`,
    ];
    const name = await h.counter('grow', grower);
    const dir = await h.checkpointDir('grow');
    const atCheckpoint = await h.count(name);
    const outcome = await driver.checkpoint({ container: await h.found(name), dir, leaveRunning: true });
    const copy = h.track(`${name}-copy`);
    const restored = await driver.restore({ dir, name: copy, runtimeMeta: outcome.runtimeMeta, verified: Promise.resolve() });
    t.is(restored.container.state, 'running');
    await expectCountResumed(() => h.count(copy), atCheckpoint);
    await expectCountResumed(() => h.count(name), atCheckpoint);
  });

  test.serial(label('unknown and stopped containers are refused with their own codes'), async (t) => {
    const missing = `ferry-${h.cli}-nonexistent-${process.pid}`;
    t.is(await driver.find(missing), undefined);
    await t.notThrowsAsync(driver.remove(missing));

    const name = await h.counter('stopped');
    await execa(h.cli, ['stop', '--time', '0', name]);
    const stopped = await h.found(name);
    t.is(stopped.state, 'stopped');
    const dir = await h.checkpointDir('stopped');
    const err = await t.throwsAsync(driver.checkpoint({ container: stopped, dir, leaveRunning: false }));
    t.is(codeOf(err), 'container_not_running');
    // A caller's stale view ("running") meets the runtime's own refusal, mapped to the same code.
    const stale = await t.throwsAsync(driver.checkpoint({ container: { ...stopped, state: 'running' }, dir, leaveRunning: false }));
    t.is(codeOf(stale), 'container_not_running', stale?.message);
    t.is(codeOf(await t.throwsAsync(driver.exec(name, ['true']))), 'container_not_running');
  });

  test.serial(label('an unverified or corrupt image fails the restore and leaves no container behind'), async (t) => {
    const name = await h.counter('corrupt');
    const dir = await h.checkpointDir('corrupt');
    const outcome = await driver.checkpoint({ container: await h.found(name), dir, leaveRunning: true });
    const copy = h.track(`${name}-copy`);

    // Verification failing: the restore never starts.
    const verified = Promise.reject(new Error('manifest mismatch'));
    verified.catch(() => undefined); // the driver may prepare before it awaits verification
    const refused = await t.throwsAsync(driver.restore({ dir, name: copy, runtimeMeta: outcome.runtimeMeta, verified }));
    t.is(refused?.message, 'manifest mismatch');
    t.is(await driver.find(copy), undefined);

    await writeFile(path.join(dir, 'checkpoint', 'pstree.img'), '');
    const err = await t.throwsAsync(driver.restore({ dir, name: copy, runtimeMeta: outcome.runtimeMeta, verified: Promise.resolve() }));
    t.is(codeOf(err), 'criu_failed', err?.message);
    if (facts.criuLog) {
      const criuLog = isFerryError(err) ? (err.criuLog ?? []) : [];
      t.true(
        criuLog.some((l) => /Error/.test(l)),
        `criuLog names CRIU's error: ${criuLog.join('\n')}`,
      );
    }
    t.is(await driver.find(copy), undefined, "the runtime's half-restored container was removed");
    t.is((await driver.find(name))?.state, 'running');
  });
}
