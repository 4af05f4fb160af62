/** podman as it runs in a test cluster's node: that node's own store and network namespace. */
import { execa } from 'execa';
import type { TestCluster } from './cluster.js';
import { COUNT_FILE, COUNTER_ARGV, readCount, waitFor } from './workload.js';

export const podmanOn = (cluster: TestCluster, node: string, args: string[]) =>
  execa('nsenter', [`--net=/run/netns/${cluster.net.node(node).netns}`, '--', 'podman', ...cluster.node(node).podman.args, ...args]);

export const podmanCount = (cluster: TestCluster, node: string, name: string) =>
  readCount(async () => (await podmanOn(cluster, node, ['exec', name, 'cat', COUNT_FILE])).stdout);

/** podman's status of the container in that node's store, or undefined when it has none. */
export async function podmanState(cluster: TestCluster, node: string, name: string): Promise<string | undefined> {
  const r = await podmanOn(cluster, node, ['container', 'inspect', '--format', '{{.State.Status}}', name]).catch(() => undefined);
  return r?.stdout.trim() || undefined;
}

/** Runs the counter from `image` as `name` on that node and waits until it counts; returns its count then. */
export async function startPodmanCounter(
  cluster: TestCluster,
  node: string,
  name: string,
  image: string,
  opts: { timeoutMs?: number } = {},
): Promise<number> {
  await podmanOn(cluster, node, ['run', '-d', '--name', name, image, ...COUNTER_ARGV]);
  return waitFor(
    () => podmanCount(cluster, node, name),
    (n) => n >= 3,
    { what: `${name} to count`, ...opts },
  );
}
