/**
 * The gap-detecting workload (e2e/workload) as the migration benchmarks start, watch and remove it on a
 * test cluster's nodes: as a podman container in a node's own store (podman run inside the node's network
 * namespace), or as a runc container under a node's runc root. Either way it starts on node a and is read
 * on node b after the move, through the same stats file.
 */
import { execa } from 'execa';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { TestCluster } from '../../support/cluster.js';
import { runcRemove, startRuncCounter } from '../../support/runc.js';
import { scaled } from '../../support/time.js';
import { readWorkloadStats, WORKLOAD_STATS_FILE, type WorkloadStats, workloadRootfs } from '../../support/workload-bin.js';
import { waitFor } from '../../support/workload.js';

/** podman with the node's store flags, inside the node's network namespace (as the node's agent runs it). */
export const podmanOn = (cluster: TestCluster, node: string, args: string[]) =>
  execa('nsenter', [`--net=/run/netns/${cluster.net.node(node).netns}`, '--', 'podman', ...cluster.node(node).podman.args, ...args]);

export interface BenchWorkload {
  runtime: 'podman' | 'runc';
  /** Starts it as `name` on node a; resolves with its stats once it has ticked for half a second with its memory filled. */
  start(name: string): Promise<WorkloadStats>;
  /** Its stats on node b once the moved workload has ticked a few times past what it had counted on a. */
  statsAfter(name: string, before: WorkloadStats): Promise<WorkloadStats>;
  /** Removes it from both nodes, wherever it is (never throws). */
  remove(name: string): Promise<void>;
}

/** The workload's loop, shared by both runtimes: `stats` reads it on a node, `launch` starts it on a. */
function benchWorkload(
  runtime: BenchWorkload['runtime'],
  rssMib: number,
  launch: (name: string) => Promise<unknown>,
  stats: (node: string, name: string) => Promise<WorkloadStats>,
  remove: (name: string) => Promise<void>,
): BenchWorkload {
  return {
    runtime,
    async start(name) {
      await launch(name);
      return waitFor(
        () => stats('a', name),
        (s) => s.count >= 50,
        { timeoutMs: scaled(30_000), everyMs: 100, what: `${name} to tick` },
      );
    },
    async statsAfter(name, before) {
      const after = await waitFor(
        () => stats('b', name),
        (s) => s.count >= before.count + 5,
        { timeoutMs: scaled(30_000), everyMs: 20, what: `${name} to tick on b` },
      );
      if (after.rssMib !== rssMib) throw new Error(`${name} on b holds ${after.rssMib} MiB, not ${rssMib}`);
      return after;
    },
    remove,
  };
}

/** The workload as a podman container of `image` (see workloadImage), run with `argv`. */
export function podmanWorkload(cluster: TestCluster, image: string, argv: string[], rssMib: number): BenchWorkload {
  return benchWorkload(
    'podman',
    rssMib,
    (name) => podmanOn(cluster, 'a', ['run', '-d', '--name', name, image, ...argv]),
    (node, name) => readWorkloadStats(async () => (await podmanOn(cluster, node, ['exec', name, 'cat', WORKLOAD_STATS_FILE])).stdout),
    async (name) => {
      await Promise.all(
        ['a', 'b'].map((n) => podmanOn(cluster, n, ['rm', '--force', '--ignore', '--time', '0', name]).catch(() => undefined)),
      );
    },
  );
}

/**
 * The workload as a runc container under node a's runc root, from a bundle of its own under `scratch`
 * (the busybox rootfs with the workload binary), run with `argv`.
 */
export function runcWorkload(cluster: TestCluster, scratch: string, argv: string[], rssMib: number): BenchWorkload {
  const root = (node: string) => cluster.node(node).runcRoot;
  return benchWorkload(
    'runc',
    rssMib,
    async (name) => {
      await workloadRootfs(path.join(scratch, name, 'rootfs'));
      await startRuncCounter(name, scratch, { root: root('a'), argv });
    },
    (node, name) =>
      readWorkloadStats(async () => (await execa('runc', ['--root', root(node), 'exec', name, 'cat', WORKLOAD_STATS_FILE])).stdout),
    async (name) => {
      await Promise.all(['a', 'b'].map((n) => runcRemove(name, root(n))));
      await rm(path.join(scratch, name), { recursive: true, force: true });
    },
  );
}
