/**
 * A cluster on one machine for migration tests: each node is a network namespace (e2e/support/netns.ts)
 * running a real `ferry agent` process with its own state directory and runc root, reached over real
 * TCP; the controller is a real `ferry controller` process in the host namespace with its own SQLite
 * file, so tests can kill it mid-migration and start it again on the same store.
 */
import { initCa, type IssuedFiles, issueCertificate } from '../../agent/src/tls/ca.js';
import { loadTlsIdentity, type TlsIdentity } from '../../agent/src/tls/identity.js';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../agent/src/client.js';
import type { RuntimeName } from '../../agent/src/runtimes/types.js';
import { ControllerClient } from '../../controller/src/client.js';
import type { MigrationRecord } from '../../controller/src/migration/types.js';
import { type PodmanStore, podmanStore, removePodmanStores } from './podman-store.js';
import { scaled } from './time.js';
import { createTestNetwork, type NodeProcess, startProcess, startProcessIn, type TestNetwork } from './netns.js';

const FERRY = fileURLToPath(new URL('../../bin/ferry.js', import.meta.url));
const AGENT_PORT = 7070;
/** Short limits, so that fault tests end in seconds: a silent transfer fails after this long. */
export const TEST_STALL_MS = scaled(3_000);

export interface ClusterNode {
  name: string;
  url: string;
  token: string;
  stateDir: string;
  runcRoot: string;
  /** The node's own podman store (agent --podman-root), so nodes on one machine do not share containers. */
  podman: PodmanStore;
  process: NodeProcess;
  agent: AgentClient;
}

export interface TestCluster {
  net: TestNetwork;
  controllerToken: string;
  /** With tls: the identity the test's own clients show. */
  tls?: TlsIdentity;
  /** Follows a migration's event stream to its end and returns the final record. */
  finished(id: string): Promise<MigrationRecord>;
  /** The client of the controller now running (a restart makes a new one). */
  client(): ControllerClient;
  controllerProcess(): NodeProcess;
  node(name: string): ClusterNode;
  /** SIGKILL: no goodbye. A killed agent's containers keep running, as on a real node. */
  killAgent(name: string): Promise<void>;
  startAgent(name: string): Promise<ClusterNode>;
  killController(): Promise<void>;
  /** Starts the controller again on the same database; it settles what it finds unfinished. */
  startController(): Promise<ControllerClient>;
  destroy(): Promise<void>;
}

export async function startTestCluster(
  tag: string,
  names: string[],
  opts: {
    runtimes: RuntimeName[];
    subnet?: string;
    agentArgs?: (node: string) => string[];
    controllerArgs?: string[];
    /** mTLS everywhere: a CA of the cluster's own, a certificate per node, the controller and the test's client. */
    tls?: boolean;
  },
): Promise<TestCluster> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), `ferry-cluster-${tag}-`));
  const net = await createTestNetwork(tag, names, opts.subnet ? { subnet: opts.subnet } : {});
  const nodes = new Map<string, ClusterNode>();
  const agentToken = randomBytes(16).toString('hex');
  const controllerToken = randomBytes(16).toString('hex');
  let controller: { process: NodeProcess; client: ControllerClient } | undefined;
  const pki = opts.tls
    ? await clusterPki(
        path.join(scratch, 'pki'),
        names.map((n) => ({ name: n, address: net.node(n).address })),
      )
    : undefined;
  const scheme = pki ? 'https' : 'http';
  // Agents listen on the namespaces' addresses: plain HTTP there must be asked for.
  const transport = (who: string) => (pki ? pki.flags(who) : ['--allow-plain-http']);

  const startAgent = async (name: string): Promise<ClusterNode> => {
    const address = net.node(name).address;
    const stateDir = path.join(scratch, name, 'state');
    const runcRoot = path.join(scratch, name, 'runc');
    const podman = podmanStore(path.join(scratch, name, 'podman'));
    await mkdir(runcRoot, { recursive: true });
    const argv = [process.execPath, FERRY, '--json', 'agent', '--listen', `${address}:${AGENT_PORT}`, '--node', name];
    argv.push('--state-dir', stateDir, '--runtimes', opts.runtimes.join(','), '--runc-root', runcRoot);
    argv.push('--transfer-stall-ms', String(TEST_STALL_MS));
    if (opts.runtimes.includes('podman')) argv.push('--podman-root', podman.root);
    argv.push(...transport(name), ...(opts.agentArgs?.(name) ?? []));
    const proc = await startProcessIn(net, name, argv, {
      readyLine: /listening on/,
      timeoutMs: scaled(30_000),
      env: { ...process.env, FERRY_TOKEN: agentToken },
    });
    const url = `${scheme}://${address}:${AGENT_PORT}`;
    const agent = new AgentClient(url, agentToken, pki ? { tls: pki.client } : {});
    const node = { name, url, token: agentToken, stateDir, runcRoot, podman, process: proc, agent };
    nodes.set(name, node);
    return node;
  };

  const startController = async (): Promise<ControllerClient> => {
    const argv = [process.execPath, FERRY, '--json', '--controller-token', controllerToken, 'controller', '--listen', '127.0.0.1:0'];
    argv.push(
      '--database',
      path.join(scratch, 'controller.db'),
      '--agent-timeout',
      String(scaled(3_000)),
      '--agent-long-timeout',
      String(scaled(120_000)),
      ...(pki ? pki.flags('controller') : []),
      ...(opts.controllerArgs ?? []),
    );
    const proc = await startProcess(argv, { readyLine: /listening on/, timeoutMs: scaled(30_000) });
    const url = /listening on (https?:\/\/\S+?);/.exec(proc.output())?.[1];
    if (!url) throw new Error(`the controller did not say where it listens:\n${proc.output()}`);
    controller = { process: proc, client: new ControllerClient(url, controllerToken, pki?.client) };
    return controller.client;
  };

  const node = (name: string): ClusterNode => {
    const n = nodes.get(name);
    if (!n) throw new Error(`no node ${name} in this cluster`);
    return n;
  };
  const stopAll = async () => {
    await controller?.process.stop();
    await Promise.all([...nodes.values()].map((n) => n.process.stop()));
    if (opts.runtimes.includes('podman')) await removePodmanStores([...nodes.values()].map((n) => n.podman));
    await net.destroy();
    await rm(scratch, { recursive: true, force: true });
  };

  try {
    await Promise.all(names.map(startAgent));
    const client = await startController();
    for (const n of nodes.values()) await client.registerNode(n.name, n.url, n.token);
  } catch (err) {
    await stopAll();
    throw err;
  }
  const running = () => {
    if (!controller) throw new Error('the controller is not running');
    return controller;
  };
  return {
    net,
    controllerToken,
    ...(pki ? { tls: pki.client } : {}),
    client: () => running().client,
    async finished(id) {
      for await (const _ of running().client.events(id)) {
        // drained: the stream ends with the migration's 'finished' event
      }
      return running().client.migration(id);
    },
    controllerProcess: () => running().process,
    node,
    async killAgent(name) {
      const n = node(name);
      n.process.child.kill('SIGKILL');
      await n.process.stop();
    },
    startAgent,
    async killController() {
      const c = running();
      c.process.child.kill('SIGKILL');
      await c.process.stop();
      controller = undefined;
    },
    startController,
    destroy: stopAll,
  };
}

/** The cluster's CA (real openssl, as `ferry tls` makes them): per node its address, the controller 127.0.0.1. */
async function clusterPki(dir: string, nodes: { name: string; address: string }[]) {
  await initCa(dir);
  const files = new Map<string, IssuedFiles>();
  for (const n of nodes) files.set(n.name, await issueCertificate(dir, n.name, { hosts: [n.address] }));
  files.set('controller', await issueCertificate(dir, 'controller', { hosts: ['127.0.0.1'] }));
  const tester = await issueCertificate(dir, 'tester');
  const client = await loadTlsIdentity(tester);
  return {
    client,
    flags(who: string): string[] {
      const f = files.get(who);
      if (!f) throw new Error(`no certificate for ${who}`);
      return ['--tls-ca', f.ca, '--tls-cert', f.cert, '--tls-key', f.key];
    },
  };
}
