/**
 * What every runtime driver test needs: the busybox image imported into the runtime, counting containers
 * started under names unique to this run and removed afterwards, and a scratch directory for checkpoints.
 */
import type { TestFn } from 'ava';
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { COUNT_FILE, COUNTER_ARGV, importBusyboxImage, readCount, waitFor } from '../../../e2e/support/workload.js';
import { isFerryError } from '../../src/errors.js';
import type { ContainerInfo, RuntimeDriver } from '../../src/runtimes/types.js';

export const IMAGE = 'ferry-busybox:latest';

export interface RuntimeHarness {
  driver: RuntimeDriver;
  cli: 'podman' | 'docker';
  scratch(): string;
  /** Registers a container this test made (e.g. a restored copy) for removal at the end. */
  track(name: string): string;
  /** Starts the counter (or another program that writes COUNT_FILE), waits until it counts, returns its name. */
  counter(what: string, argv?: string[]): Promise<string>;
  found(name: string): Promise<ContainerInfo>;
  count(name: string): Promise<number>;
  checkpointDir(what: string): Promise<string>;
}

export function runtimeHarness(test: TestFn, driver: RuntimeDriver, cli: 'podman' | 'docker'): RuntimeHarness {
  const containers: string[] = [];
  let scratch = '';

  test.before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), `ferry-${cli}-test-`));
    await importBusyboxImage(cli, IMAGE, scratch);
  });
  test.after.always(async () => {
    for (const name of containers) await driver.remove(name);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  });

  const h: RuntimeHarness = {
    driver,
    cli,
    scratch: () => scratch,
    track(name) {
      containers.push(name);
      return name;
    },
    async counter(what, argv = COUNTER_ARGV) {
      const name = h.track(`ferry-${cli}-${what}-${process.pid}`);
      await execa(cli, ['run', '-d', '--name', name, IMAGE, ...argv]);
      await waitFor(
        () => h.count(name),
        (n) => n >= 3,
        { what: `${name} to count` },
      );
      return name;
    },
    async found(name) {
      const c = await driver.find(name);
      if (!c) throw new Error(`${cli} has no container ${name}`);
      return c;
    },
    async count(name) {
      return readCount(() => driver.exec(name, ['cat', COUNT_FILE]));
    },
    checkpointDir: (what) => mkdtemp(path.join(scratch, `${what}-`)),
  };
  return h;
}

export const codeOf = (err: unknown) => (isFerryError(err) ? err.code : String(err));

export async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t0 = performance.now();
  const v = await fn();
  return [v, Math.round(performance.now() - t0)];
}
