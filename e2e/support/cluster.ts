/**
 * A cluster on one machine for migration tests: each node is a network namespace (e2e/support/netns.ts)
 * running a real `ferry agent` process with its own state directory and runc root, reached over real
 * TCP; the controller runs in this process, in the host namespace, on its own SQLite file.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RuntimeName } from '../../agent/src/runtimes/types.js';
import { ControllerClient } from '../../controller/src/client.js';
import { type RunningController, startController } from '../../controller/src/main.js';
import { createTestNetwork, type NodeProcess, startProcessIn, type TestNetwork } from './netns.js';

const FERRY = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));
const AGENT_PORT = 7070;

export interface ClusterNode {
  name: string;
  url: string;
  token: string;
  stateDir: string;
  runcRoot: string;
  process: NodeProcess;
}

export interface TestCluster {
  net: TestNetwork;
  controller: RunningController;
  client: ControllerClient;
  node(name: string): ClusterNode;
  /** Kills a node's agent (SIGKILL: no goodbye), for fault tests. Its containers keep running. */
  killAgent(name: string): Promise<void>;
  startAgent(name: string): Promise<ClusterNode>;
  destroy(): Promise<void>;
}

export async function startTestCluster(
  tag: string,
  names: string[],
  opts: { runtimes: RuntimeName[]; subnet?: string },
): Promise<TestCluster> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), `ferry-cluster-${tag}-`));
  const net = await createTestNetwork(tag, names, opts.subnet ? { subnet: opts.subnet } : {});
  const nodes = new Map<string, ClusterNode>();
  const token = randomBytes(16).toString('hex');

  const startAgent = async (name: string): Promise<ClusterNode> => {
    const address = net.node(name).address;
    const stateDir = path.join(scratch, name, 'state');
    const runcRoot = path.join(scratch, name, 'runc');
    await mkdir(runcRoot, { recursive: true });
    const argv = [process.execPath, FERRY, '--json', 'agent', '--listen', `${address}:${AGENT_PORT}`, '--node', name];
    argv.push('--state-dir', stateDir, '--runtimes', opts.runtimes.join(','), '--runc-root', runcRoot);
    const proc = await startProcessIn(net, name, argv, {
      readyLine: /listening on/,
      timeoutMs: 30_000,
      env: { ...process.env, FERRY_TOKEN: token },
    });
    const node = { name, url: `http://${address}:${AGENT_PORT}`, token, stateDir, runcRoot, process: proc };
    nodes.set(name, node);
    return node;
  };

  let controller: RunningController | undefined;
  try {
    await Promise.all(names.map(startAgent));
    const controllerToken = randomBytes(16).toString('hex');
    controller = await startController(
      { host: '127.0.0.1', port: 0, token: controllerToken, database: path.join(scratch, 'controller.db'), healthCheckMs: 60_000 },
      false,
    );
    const client = new ControllerClient(controller.url, controllerToken);
    for (const n of nodes.values()) await client.registerNode(n.name, n.url, n.token);
    const started = controller;
    const node = (name: string): ClusterNode => {
      const n = nodes.get(name);
      if (!n) throw new Error(`no node ${name} in this cluster`);
      return n;
    };
    return {
      net,
      controller: started,
      client,
      node,
      async killAgent(name) {
        const n = node(name);
        n.process.child.kill('SIGKILL');
        await n.process.stop();
      },
      startAgent,
      async destroy() {
        await started.close();
        await Promise.all([...nodes.values()].map((n) => n.process.stop()));
        await net.destroy();
        await rm(scratch, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await controller?.close();
    await Promise.all([...nodes.values()].map((n) => n.process.stop()));
    await net.destroy();
    await rm(scratch, { recursive: true, force: true });
    throw err;
  }
}
