/**
 * A pod's container moved between two real containerd instances through the CRI API, driven as kubelet
 * drives it (RunPodSandbox, CreateContainer, StartContainer): node a's pod counts in memory; the agent on a
 * checkpoints the container through containerd's runc root and sends it to b; on b a new pod sandbox (its
 * own network namespace and address, from Debian's CNI bridge plugin) gets a container created with the
 * ferry.dev/restore-from annotation on the `ferry` runtime handler, and ferry-runc restores the count
 * there. This is what the controller will do with a pinned replacement pod (issue 6); kubelet itself
 * cannot run here, so the test speaks its protocol to containerd.
 */
import type { ContainerInfo } from '../agent/src/runtimes/types.js';
import { selects } from '../controller/src/policy/compile.js';
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { TestCluster } from './support/cluster.js';
import { CRI_HANDLER } from './support/containerd.js';
import { type ContainerConfig, type CriClient, KUBELET_NAMESPACES, type PodSandboxConfig } from './support/cri/client.js';
import { type CriCluster, CTR_IMAGE, startCriCluster } from './support/cri-cluster.js';
import { COUNTER_ARGV, countOf, waitFor } from './support/workload.js';

const SUBNETS: Record<string, string> = { a: '10.89.1.0/24', b: '10.89.2.0/24' };

let scratch: string;
let nodes: CriCluster;
let cluster: TestCluster;
let cri: Map<string, CriClient>;
const sandboxes: [string, string][] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-cri-'));
  nodes = await startCriCluster(`cri${process.pid % 100000}`, scratch, { subnet: `10.88.${process.pid % 250}.0/24`, podSubnets: SUBNETS });
  ({ cluster, cri } = nodes);
});

test.after.always(async () => {
  for (const [n, id] of sandboxes) {
    await cri
      ?.get(n)
      ?.stopPodSandbox(id)
      .catch(() => undefined);
    await cri
      ?.get(n)
      ?.removePodSandbox(id)
      .catch(() => undefined);
  }
  await nodes?.stop();
  await rm(scratch, { recursive: true, force: true });
});

const client = (n: string) => cri.get(n) as CriClient;

/** What kubelet would send for a pod named `name` with uid `uid`: the pod's annotations go on the sandbox. */
const podConfig = (name: string, uid: string, annotations: Record<string, string> = {}): PodSandboxConfig => ({
  metadata: { name, uid, namespace: 'default', attempt: 0 },
  hostname: name,
  labels: { app: 'counter' },
  annotations,
  linux: { securityContext: { namespaceOptions: KUBELET_NAMESPACES } },
});

/**
 * What kubelet would send for the pod's container. Its own PID namespace matters to a restore: CRIU gives
 * the processes back their PIDs, which in a namespace shared with the pod could be taken already.
 */
const containerConfig = (command: string[]): ContainerConfig => ({
  metadata: { name: 'count' },
  image: { image: CTR_IMAGE },
  command,
  linux: { securityContext: { namespaceOptions: KUBELET_NAMESPACES } },
});

async function runPod(n: string, config: PodSandboxConfig): Promise<string> {
  const id = await client(n).runPodSandbox(config, CRI_HANDLER);
  sandboxes.push([n, id]);
  return id;
}

/** The count the container last wrote, through its process's root (the pid from runc's state via the agent). */
async function count(n: string, containerId: string): Promise<number> {
  const c = (await cluster.node(n).agent.containers('runc')).find((x) => x.id === containerId);
  if (c?.state !== 'running' || !c.pid) return Number.NaN;
  return countOf(c.pid);
}

test.serial(
  'CRI: a pod container checkpointed on a comes back in a new pod on b, through the ferry handler, and keeps counting',
  async (t) => {
    const version = await client('a').version();
    t.is(version.runtimeName, 'containerd');

    const podA = podConfig('counter', 'uid-a');
    const sandboxA = await runPod('a', podA);
    const containerA = await client('a').createContainer(sandboxA, containerConfig(COUNTER_ARGV), podA);
    await client('a').startContainer(containerA);
    t.is((await client('a').containerStatus(containerA)).state, 'CONTAINER_RUNNING');
    await waitFor(
      () => count('a', containerA),
      (c) => c >= 20,
      { what: 'the pod on a to count' },
    );

    // What a CheckpointPolicy object in the pod's namespace selects, from the agent's real listing: the
    // application container, by pod name; not the sandbox; nothing from another namespace.
    const listed = await cluster.node('a').agent.containers('runc');
    const app = listed.find((x) => x.id === containerA);
    t.truthy(app);
    t.true(selects({ namespace: podA.metadata.namespace, names: ['counter'] }, 'a', app as ContainerInfo), 'selected by its pod name');
    t.false(selects({ namespace: 'elsewhere', names: ['counter'] }, 'a', app as ContainerInfo), 'not from another namespace');
    const sandbox = listed.find((x) => x.id === sandboxA);
    t.false(Boolean(sandbox && selects({ namespace: podA.metadata.namespace, names: ['counter'] }, 'a', sandbox)), 'the sandbox never');

    const before = await count('a', containerA);
    const ck = await cluster.node('a').agent.checkpoint({ runtime: 'runc', container: containerA });
    await waitFor(
      () => client('a').containerStatus(containerA),
      (s) => s.state === 'CONTAINER_EXITED',
      { what: 'containerd on a to report the checkpointed container exited' },
    );
    await cluster.node('a').agent.send(ck.id, { url: cluster.node('b').url, token: cluster.node('b').token });

    // The replacement pod, as the controller creates it pinned to b: same container, and the pod annotation
    // naming the checkpoint for the container called `count`. kubelet puts pod annotations on the sandbox
    // config only; containerd's pod_annotations hands them to the container's spec, and ferry-runc leaves
    // the sandbox's pause container alone.
    const podB = podConfig('counter', 'uid-b', { 'ferry.dev/restore-from.count': ck.id });
    const sandboxB = await runPod('b', podB);
    const ip = (await client('b').podSandboxStatus(sandboxB)).network.ip;
    t.true(ip.startsWith('10.89.2.'), `the pod on b has an address of b's network (${ip})`);
    const containerB = await client('b').createContainer(sandboxB, containerConfig(['sleep', '1000']), podB);
    await client('b').startContainer(containerB);
    const status = await client('b').containerStatus(containerB);
    t.is(status.state, 'CONTAINER_RUNNING');

    const first = await count('b', containerB);
    t.true(first >= before, `the count resumes from the checkpoint (${first} after ${before} on a), not from 0`);
    await waitFor(
      () => count('b', containerB),
      (c) => c > first,
      { what: 'the restored container on b to keep counting' },
    );

    // kubelet's way out: stop and remove; containerd sees the restored process end.
    await client('b').stopContainer(containerB, 0);
    t.is((await client('b').containerStatus(containerB)).state, 'CONTAINER_EXITED');
    await client('b').removeContainer(containerB);
  },
);

test.serial('CRI: without an annotation for it the ferry handler runs the container as runc would', async (t) => {
  // The pod names a checkpoint for another of its containers only.
  const pod = podConfig('plain', 'uid-plain', { 'ferry.dev/restore-from.sidecar': 'ck-not-for-count' });
  const sandbox = await runPod('b', pod);
  const id = await client('b').createContainer(sandbox, containerConfig(COUNTER_ARGV), pod);
  await client('b').startContainer(id);
  const first = await waitFor(
    () => count('b', id),
    (c) => c >= 1,
    { what: 'a fresh counter on b' },
  );
  t.true(first < 20, `a fresh container counts from the start (${first})`);
});
