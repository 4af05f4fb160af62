/**
 * Agents found through the API (controller/src/kube/agents.ts): `ferry controller --kube --agent-selector`
 * against the API stand-in registers the agent DaemonSet's pods as nodes once they are Running and Ready,
 * under their node's name, at their address and the agents' port. The agents are real agent processes on
 * two loopback addresses (127.0.0.1 and 127.0.0.2, as two hosts' addresses would be); the pods that
 * describe them are objects in the stand-in, whose status the test sets as kubelet would.
 */
import { CoreV1Api, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../agent/src/runtimes/lazy.js';
import { fileURLToPath } from 'node:url';
import { ControllerClient } from '../controller/src/client.js';
import { type KubeApiStandIn, startKubeApi } from './support/kube-api/server.js';
import { type NodeProcess, startProcess } from './support/netns.js';
import { scaled } from './support/time.js';
import { waitFor } from './support/workload.js';

const FERRY = fileURLToPath(new URL('../bin/ferry.js', import.meta.url));
const NS = 'ferry-system';
const SELECTOR = { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'agent' };
const agentToken = randomBytes(16).toString('hex');
const controllerToken = randomBytes(16).toString('hex');
let api: KubeApiStandIn;
let scratch: string;
let port: number;
let controller: ControllerClient;
let controllerProcess: NodeProcess;
const processes: NodeProcess[] = [];

async function startAgent(node: string, address: string): Promise<void> {
  const dir = path.join(scratch, node);
  const argv = [process.execPath, FERRY, '--json', 'agent', '--listen', `${address}:${port}`, '--node', node];
  argv.push('--state-dir', path.join(dir, 'state'), '--runtimes', 'runc', '--runc-root', path.join(dir, 'runc'));
  processes.push(
    await startProcess(argv, { readyLine: /listening on/, timeoutMs: scaled(30_000), env: { ...process.env, FERRY_TOKEN: agentToken } }),
  );
}

test.before(async () => {
  api = await startKubeApi();
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-kube-agents-'));
  await writeFile(path.join(scratch, 'kubeconfig'), api.kubeConfig().exportConfig());
  port = await freePort();
  await startAgent('node-1', '127.0.0.1');
  await startAgent('node-2', '127.0.0.2');
  const argv = [process.execPath, FERRY, '--json', '--controller-token', controllerToken, 'controller', '--listen', '127.0.0.1:0'];
  argv.push('--database', path.join(scratch, 'controller.db'), '--kube', '--kubeconfig', path.join(scratch, 'kubeconfig'));
  argv.push(
    '--lease-namespace',
    NS,
    '--agent-selector',
    Object.entries(SELECTOR)
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
  );
  argv.push('--agent-port', String(port));
  const p = await startProcess(argv, {
    readyLine: /listening on/,
    timeoutMs: scaled(30_000),
    env: { ...process.env, FERRY_AGENT_TOKEN: agentToken },
  });
  processes.push(p);
  controllerProcess = p;
  const url = /listening on (https?:\/\/\S+?);/.exec(p.output())?.[1];
  if (!url) throw new Error(`the controller did not say where it listens:\n${p.output()}`);
  controller = new ControllerClient(url, controllerToken);
});

test.after.always(async () => {
  for (const p of processes) await p.stop();
  await api?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const core = () => api.kubeConfig(NS).makeApiClient(CoreV1Api);

function agentPod(name: string, node: string, labels: Record<string, string> = SELECTOR): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels },
    spec: { nodeName: node, hostNetwork: true, containers: [{ name: 'agent', image: 'ferry' }] },
  };
}

/** What kubelet reports for a pod: its phase, its address, and whether it is Ready. */
async function setStatus(name: string, podIP: string, ready: boolean): Promise<void> {
  await core().patchNamespacedPodStatus(
    {
      namespace: NS,
      name,
      body: {
        status: { phase: 'Running', podIP, hostIP: podIP, conditions: [{ type: 'Ready', status: ready ? 'True' : 'False' }] },
      },
    },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

const registered = async () => Object.fromEntries((await controller.nodes()).map((n) => [n.name, n.url]));

test.serial('agent pods are registered as nodes once Running and Ready, under their node name, at their address', async (t) => {
  await core().createNamespacedPod({ namespace: NS, body: agentPod('ferry-agent-x1', 'node-1') });
  await core().createNamespacedPod({ namespace: NS, body: agentPod('ferry-agent-y2', 'node-2') });
  await core().createNamespacedPod({ namespace: NS, body: agentPod('other-z3', 'node-3', { app: 'other' }) });
  await setStatus('ferry-agent-x1', '127.0.0.1', true);
  await setStatus('ferry-agent-y2', '127.0.0.2', false);
  await setStatus('other-z3', '127.0.0.3', true);

  const first = await waitFor(registered, (n) => 'node-1' in n, { what: 'node-1 to be registered', timeoutMs: scaled(15_000) });
  t.is(first['node-1'], `http://127.0.0.1:${port}`);
  t.false('node-2' in first, 'a pod that is not Ready yet is not registered');
  t.false('node-3' in first, 'a pod the selector does not pick is ignored');
  const node1 = (await controller.nodes()).find((n) => n.name === 'node-1');
  t.true(node1?.capabilities !== undefined, "registration probed the agent with the agents' token");

  await setStatus('ferry-agent-y2', '127.0.0.2', true);
  const both = await waitFor(registered, (n) => 'node-2' in n, { what: 'node-2 to be registered once Ready', timeoutMs: scaled(15_000) });
  t.is(both['node-2'], `http://127.0.0.2:${port}`);
});

test.serial('a pod whose agent does not answer yet is registered once it does', async (t) => {
  // node-4's pod says Ready before its agent listens: the registration fails, and a retry succeeds.
  await core().createNamespacedPod({ namespace: NS, body: agentPod('ferry-agent-w4', 'node-4') });
  await setStatus('ferry-agent-w4', '127.0.0.4', true);
  await waitFor(
    async () => controllerProcess.output(),
    (out) => /agent pod ferry-system\/ferry-agent-w4 at \S+ not registered yet/.test(out),
    { what: 'the first registration of node-4 to fail', timeoutMs: scaled(15_000) },
  );
  t.false('node-4' in (await registered()));
  await startAgent('node-4', '127.0.0.4');
  const nodes = await waitFor(registered, (n) => 'node-4' in n, { what: 'node-4 to be registered on a retry', timeoutMs: scaled(20_000) });
  t.is(nodes['node-4'], `http://127.0.0.4:${port}`);
});
