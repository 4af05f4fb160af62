/**
 * Injecting faults into migrations and checkpoints on a test cluster, and checking what must hold after
 * any of them: exactly one running copy of the workload, counting on from before, and no checkpoint
 * listed anywhere that fails verification. Shared by e2e/migrate-faults.test.ts and the fault matrix.
 */
import { execa } from 'execa';
import { watch } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { MigrationRecord } from '../../controller/src/migration/types.js';
import type { TestCluster } from './cluster.js';
import { runcCount, runcState } from './runc.js';
import { expectCountResumed, waitFor } from './workload.js';

/** ~2.3 MB of a counter's checkpoint at this rate takes about 5 s on the wire. */
export const SLOW_LINK_MBIT = 4;

const imagesOf = (cluster: TestCluster, node: string) => path.join(cluster.node(node).stateDir, 'images');

/** Resolves when `node`'s store starts writing a checkpoint whose partial directory matches (a file-system event). */
export function whenWriting(cluster: TestCluster, node: string, prefix: string): { started: Promise<void>; close(): void } {
  const watcher = watch(path.join(imagesOf(cluster, node), 'checkpoints'));
  const started = new Promise<void>((resolve) =>
    watcher.on('change', (_type, name) => {
      if (String(name).startsWith(prefix)) resolve();
    }),
  );
  return { started, close: () => watcher.close() };
}

/** Starts a migration a -> b of a runc container and calls `fault` once the target receives bytes. */
export async function migrateWithFault(
  cluster: TestCluster,
  id: string,
  fault: (m: MigrationRecord) => Promise<unknown>,
): Promise<MigrationRecord> {
  const incoming = whenWriting(cluster, 'b', '.partial-import-');
  try {
    const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
    await incoming.started;
    await fault(accepted);
    return accepted;
  } finally {
    incoming.close();
  }
}

/** Runs `fn` with `node`'s link throttled, so that a transfer lasts long enough to be hit mid-way. */
export async function onSlowLink<T>(cluster: TestCluster, fn: () => Promise<T>, node = 'a'): Promise<T> {
  await cluster.net.throttle(node, SLOW_LINK_MBIT);
  try {
    return await fn();
  } finally {
    await cluster.net.throttle(node, undefined);
  }
}

/** Runs `fn` with `node`'s image store on a tmpfs of `mib` MiB (its agent restarted on it), then puts it back. */
export async function withFullDisk<T>(cluster: TestCluster, node: string, mib: number, fn: () => Promise<T>): Promise<T> {
  const images = imagesOf(cluster, node);
  await cluster.killAgent(node);
  await mkdir(images, { recursive: true });
  await execa('mount', ['-t', 'tmpfs', '-o', `size=${mib}m,mode=0700`, 'ferry-test-full', images]);
  try {
    await cluster.startAgent(node);
    return await fn();
  } finally {
    await cluster.killAgent(node).catch(() => undefined);
    await execa('umount', [images]).catch(() => execa('umount', ['-l', images]));
    await cluster.startAgent(node);
  }
}

/** Which nodes run the container, by runc state ('running', 'paused' for frozen, 'stopped'). */
export async function copiesOf(cluster: TestCluster, id: string): Promise<Record<string, string | undefined>> {
  const out: Record<string, string | undefined> = {};
  for (const n of ['a', 'b']) out[n] = await runcState(id, cluster.node(n).runcRoot);
  return out;
}

/**
 * The invariants after any fault: the workload runs on exactly `on` (not frozen, not stopped, and on no
 * other node), counting on from `before`; the other node keeps no partial checkpoint; and every
 * checkpoint listed on either node passes verification (an export re-reads it against its manifest).
 */
export async function assertOneCopy(cluster: TestCluster, id: string, on: string, before: number): Promise<void> {
  const other = on === 'a' ? 'b' : 'a';
  await expectCountResumed(() => runcCount(id, cluster.node(on).runcRoot), before);
  const copies = await copiesOf(cluster, id);
  if (copies[on] !== 'running' || copies[other] !== undefined)
    throw new Error(`expected one running copy on ${on}, found ${JSON.stringify(copies)}`);
  await waitFor(
    () => readdir(path.join(imagesOf(cluster, other), 'checkpoints')),
    (names) => names.every((n) => !n.startsWith('.partial-')),
    { what: `${other} to keep no partial checkpoint`, timeoutMs: 15_000 },
  );
  for (const n of ['a', 'b']) {
    const agent = cluster.node(n).agent;
    for (const m of await agent.checkpoints()) {
      await pipeline(
        await agent.exportArchive(m.id),
        new Writable({
          write: (_c, _e, done) => done(),
        }),
      );
    }
  }
}
