/**
 * Kubernetes nodes without Kubernetes: a test cluster whose agents read containerd's runc root for pods,
 * and per node a private containerd with its CRI plugin on, a CRI client to it, and the busybox and pause
 * images imported. Shared by the CRI restore test and the pod migration test.
 */
import path from 'node:path';
import { IMAGE } from '../../agent/test/runtimes/harness.js';
import { startTestCluster, type TestCluster } from './cluster.js';
import { buildSandboxImage, CRI_NAMESPACE, type ContainerdNode, importFromPodman, startContainerd } from './containerd.js';
import { CriClient } from './cri/client.js';
import { importBusyboxImage } from './workload.js';

export const SANDBOX_IMAGE = 'localhost/ferry-pause:1';
/** podman's name for IMAGE, which its archive carries into containerd. */
export const CTR_IMAGE = 'localhost/ferry-busybox:latest';

export interface CriCluster {
  cluster: TestCluster;
  containerd: Map<string, ContainerdNode>;
  cri: Map<string, CriClient>;
  /** Stops containerd and the cluster; what the test ran on them it removes first. */
  stop(): Promise<void>;
}

export async function startCriCluster(
  tag: string,
  scratch: string,
  opts: { subnet: string; podSubnets: Record<string, string>; controllerArgs?: string[] },
): Promise<CriCluster> {
  const names = Object.keys(opts.podSubnets);
  const runcRoot = (node: string) => path.join(scratch, node, 'runc', CRI_NAMESPACE);
  const cluster = await startTestCluster(tag, names, {
    runtimes: ['runc'],
    subnet: opts.subnet,
    agentArgs: (n) => ['--runc-root', runcRoot(n)],
    ...(opts.controllerArgs ? { controllerArgs: opts.controllerArgs } : {}),
  });
  const containerd = new Map<string, ContainerdNode>();
  const cri = new Map<string, CriClient>();
  const stop = async () => {
    for (const c of cri.values()) c.close();
    for (const c of containerd.values()) await c.stop().catch(() => undefined);
    await cluster.destroy();
  };
  try {
    await importBusyboxImage('podman', IMAGE, scratch);
    await buildSandboxImage(IMAGE, SANDBOX_IMAGE);
    for (const n of names) {
      const c = await startContainerd(cluster.net, n, path.join(scratch, n), {
        imageStore: path.join(cluster.node(n).stateDir, 'images'),
        cri: { subnet: opts.podSubnets[n] as string, sandboxImage: SANDBOX_IMAGE },
      });
      containerd.set(n, c);
      if (c.criRuncRoot !== runcRoot(n)) throw new Error(`containerd on ${n} keeps runc state for pods in ${c.criRuncRoot}`);
      cri.set(n, new CriClient(c.address));
    }
    const nodes = [...containerd.values()];
    await importFromPodman(nodes, IMAGE, scratch, CRI_NAMESPACE);
    await importFromPodman(nodes, SANDBOX_IMAGE, scratch, CRI_NAMESPACE);
  } catch (err) {
    await stop();
    throw err;
  }
  return { cluster, containerd, cri, stop };
}
