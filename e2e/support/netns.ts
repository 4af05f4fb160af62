/**
 * A multi-node network on one machine for live-migration tests: each node is a network namespace with a
 * veth into one bridge in the host namespace, so the controller and the test (host namespace) and the
 * nodes reach each other over real TCP.
 *
 * Names are derived from a short tag: bridge `fbr-<tag>`, namespaces `ferry-<tag>-<node>`, host ends of
 * the veths `fv-<tag>-<index>` (the index, not the node's name, keeps them within the 15 characters of an
 * interface name). Everything carrying the tag is treated as this network's, so a rerun after a crash
 * clears what the crashed run left.
 */
import { type ChildProcess, execFile, type SpawnOptions, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { scaled } from './time.js';

const exec = promisify(execFile);

export interface TestNode {
  name: string;
  /** The namespace's name under /run/netns. */
  netns: string;
  address: string;
  /** The host end of the node's veth, a port of the bridge. */
  hostIface: string;
}

export interface TestNetwork {
  tag: string;
  bridge: string;
  hostAddress: string;
  nodes: TestNode[];
  node(name: string): TestNode;
  /** Cuts a node off (its veth down) and restores it: for fault-injection tests of a link lost mid-transfer. */
  cut(name: string): Promise<void>;
  /** Resolves once the link forwards again. */
  heal(name: string): Promise<void>;
  /**
   * Limits what a node sends (token bucket on its eth0), so a transfer lasts long enough for a fault to
   * land in its middle; `undefined` lifts the limit.
   */
  throttle(name: string, mbitPerS: number | undefined): Promise<void>;
  /** Runs argv inside the node's namespace; only the network namespace differs from the caller's. */
  spawnIn(name: string, argv: string[], opts?: SpawnOptions): ChildProcess;
  /** Kills what spawnIn started and is still running, removes everything; never throws on pieces already gone. */
  destroy(): Promise<void>;
}

export interface TestNetworkOptions {
  /** An x.y.z.0/24: nodes get .1, .2, … in order, the host .254. Networks alive at once need distinct subnets. */
  subnet?: string;
}

export interface NodeProcess {
  child: ChildProcess;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
  stop(): Promise<void>;
}

const TAG = /^[a-z0-9]{1,8}$/;
const NODE_NAME = /^[a-z0-9][a-z0-9_.-]*$/i;
const HOST_OCTET = 254;
const STOP_GRACE_MS = 5_000;

const bridgeName = (tag: string) => `fbr-${tag}`;
const vethPrefix = (tag: string) => `fv-${tag}-`;
const netnsPrefix = (tag: string) => `ferry-${tag}-`;
const ruleComment = (tag: string) => `ferry-netns:${tag}`;

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    return (await exec(cmd, args)).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.trim() || e.message}`);
  }
}

const ip = (...args: string[]) => run('ip', args);
const quietly = (p: Promise<unknown>) =>
  p.then(
    () => true,
    () => false,
  );

/**
 * The kernel's bridge-nf ORs the host-wide bridge-nf-call-iptables sysctl with the bridge's own
 * nf_call_iptables flag, so the flag cannot switch filtering off while the sysctl is 1, which it is as soon
 * as br_netfilter is loaded (dockerd loads it, and may do so mid-run). Bridged node-to-node traffic then
 * meets the FORWARD chain, whose policy dockerd sets to DROP. Turning the sysctl off would change docker's
 * own isolation, so the bridge gets its own ACCEPT rule instead, tagged for removal. Without iptables
 * there is no FORWARD chain to pass, hence false rather than an error.
 */
function forwardRule(tag: string, action: '-I' | '-D'): Promise<boolean> {
  const br = bridgeName(tag);
  return run('iptables', [
    '-w',
    action,
    'FORWARD',
    '-i',
    br,
    '-o',
    br,
    '-m',
    'comment',
    '--comment',
    ruleComment(tag),
    '-j',
    'ACCEPT',
  ]).then(
    () => true,
    (err: Error) => {
      if (action === '-I' && !/ENOENT/.test(err.message)) throw err;
      return false;
    },
  );
}

interface IpLink {
  ifname: string;
  operstate?: string;
  linkinfo?: { info_slave_data?: { state?: string } };
}

async function links(netns?: string): Promise<IpLink[]> {
  const args = netns ? ['-n', netns] : [];
  return JSON.parse(await ip(...args, '-j', '-d', 'link', 'show')) as IpLink[];
}

async function netnsNames(): Promise<string[]> {
  // Lines read "name" or "name (id: 3)".
  return (await ip('netns', 'list'))
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

/** Removes every namespace, link and firewall rule carrying the tag; never throws. */
export async function destroyTestNetwork(tag: string): Promise<void> {
  // Deleting a namespace only drops its name: a process still inside keeps it, and the veth pair with it,
  // alive. So the host ends are deleted explicitly, which takes the peer inside down with them.
  const names = await netnsNames().catch(() => [] as string[]);
  for (const ns of names.filter((n) => n.startsWith(netnsPrefix(tag)))) await quietly(ip('netns', 'del', ns));
  const hostLinks = await links().catch(() => [] as IpLink[]);
  for (const l of hostLinks.filter((l) => l.ifname.startsWith(vethPrefix(tag)))) await quietly(ip('link', 'del', l.ifname));
  if (hostLinks.some((l) => l.ifname === bridgeName(tag))) await quietly(ip('link', 'del', bridgeName(tag)));
  // A crashed run may have inserted its rule more than once; each -D removes one.
  let left = 16;
  while (left-- > 0 && (await forwardRule(tag, '-D'))) {}
}

function parseSubnet(subnet: string): string {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.0\/24$/.exec(subnet);
  if (!m || m.slice(1).some((o) => Number(o) > 255)) throw new Error(`subnet must be an x.y.z.0/24, got ${subnet}`);
  return `${m[1]}.${m[2]}.${m[3]}.`;
}

/** Refuses a subnet another interface already holds: two bridges on one subnet would split the host's route. */
async function assertSubnetFree(prefix: string, subnet: string): Promise<void> {
  const ifaces = JSON.parse(await ip('-4', '-j', 'addr', 'show')) as { ifname: string; addr_info?: { local?: string }[] }[];
  const holder = ifaces.find((i) => i.addr_info?.some((a) => a.local?.startsWith(prefix)));
  if (holder) throw new Error(`subnet ${subnet} is already in use on ${holder.ifname}; pass another subnet`);
}

async function waitForwarding(node: TestNode, timeoutMs = scaled(5_000)): Promise<void> {
  // Carrier and bridge port state settle asynchronously after a link comes up, and the kernel offers no
  // notification short of a netlink monitor; a bounded poll is enough for a test fixture.
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const host = (await links()).find((l) => l.ifname === node.hostIface);
    const inner = (await links(node.netns)).find((l) => l.ifname === 'eth0');
    const port = host?.linkinfo?.info_slave_data?.state;
    if (host?.operstate === 'UP' && inner?.operstate === 'UP' && port === 'forwarding') return;
    last = `${node.hostIface} ${host?.operstate} (port ${port}), eth0 ${inner?.operstate}`;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`link of node ${node.name} not forwarding after ${timeoutMs} ms: ${last}`);
}

export async function createTestNetwork(tag: string, nodeNames: string[], opts: TestNetworkOptions = {}): Promise<TestNetwork> {
  if (!TAG.test(tag)) throw new Error(`tag must be 1-8 lowercase letters or digits (interface names are at most 15 chars), got ${tag}`);
  const bad = nodeNames.find((n) => !NODE_NAME.test(n));
  if (bad !== undefined) throw new Error(`bad node name ${bad}`);
  if (new Set(nodeNames).size !== nodeNames.length) throw new Error(`node names must be unique: ${nodeNames.join(', ')}`);
  if (nodeNames.length === 0 || nodeNames.length >= HOST_OCTET) throw new Error(`need 1 to ${HOST_OCTET - 1} nodes`);
  const subnet = opts.subnet ?? '10.77.0.0/24';
  const prefix = parseSubnet(subnet);

  await destroyTestNetwork(tag);
  await assertSubnetFree(prefix, subnet);

  const bridge = bridgeName(tag);
  const hostAddress = `${prefix}${HOST_OCTET}`;
  const nodes: TestNode[] = nodeNames.map((name, i) => ({
    name,
    netns: `${netnsPrefix(tag)}${name}`,
    address: `${prefix}${i + 1}`,
    hostIface: `${vethPrefix(tag)}${i}`,
  }));
  try {
    await ip('link', 'add', bridge, 'type', 'bridge');
    await ip('addr', 'add', `${hostAddress}/24`, 'dev', bridge);
    await ip('link', 'set', bridge, 'up');
    await forwardRule(tag, '-I');
    for (const n of nodes) {
      await ip('netns', 'add', n.netns);
      await ip('link', 'add', n.hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.netns);
      await ip('link', 'set', n.hostIface, 'master', bridge, 'up');
      await ip('-n', n.netns, 'addr', 'add', `${n.address}/24`, 'dev', 'eth0');
      await ip('-n', n.netns, 'link', 'set', 'eth0', 'up');
      await ip('-n', n.netns, 'link', 'set', 'lo', 'up');
    }
    for (const n of nodes) await waitForwarding(n);
  } catch (err) {
    await destroyTestNetwork(tag);
    throw err;
  }

  const children = new Map<ChildProcess, Promise<void>>();
  const node = (name: string): TestNode => {
    const n = nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node ${name} in network ${tag} (nodes: ${nodeNames.join(', ')})`);
    return n;
  };

  return {
    tag,
    bridge,
    hostAddress,
    nodes,
    node,
    cut: async (name) => {
      await ip('link', 'set', node(name).hostIface, 'down');
    },
    heal: async (name) => {
      await ip('link', 'set', node(name).hostIface, 'up');
      await waitForwarding(node(name));
    },
    throttle: async (name, mbitPerS) => {
      const inNode = ['--net=/run/netns/' + node(name).netns, '--', 'tc', 'qdisc'];
      await quietly(run('nsenter', [...inNode, 'del', 'dev', 'eth0', 'root']));
      if (mbitPerS !== undefined) {
        await run('nsenter', [...inNode, 'add', 'dev', 'eth0', 'root', 'tbf', 'rate', `${mbitPerS}mbit`, 'burst', '32kb', 'latency', '2s']);
      }
    },
    spawnIn: (name, argv, spawnOpts = {}) => {
      const [cmd, ...args] = argv;
      if (cmd === undefined) throw new Error('spawnIn needs a command');
      // Not `ip netns exec`: it also unshares the mount namespace and remounts /sys, so mounts an agent or
      // runc makes inside would be invisible to the host and the other nodes. nsenter execs in place, so
      // the child's pid is the command's and signals reach it directly.
      const child = spawn('nsenter', [`--net=/run/netns/${node(name).netns}`, '--', cmd, ...args], spawnOpts);
      const exited = new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.once('error', () => resolve());
      });
      children.set(child, exited);
      void exited.then(() => children.delete(child));
      return child;
    },
    destroy: async () => {
      for (const [child, exited] of children) {
        child.kill('SIGKILL');
        // Bounded: a process stuck in the kernel must not keep the network from being torn down.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([exited, new Promise((r) => (timer = setTimeout(r, STOP_GRACE_MS)))]);
        clearTimeout(timer);
      }
      await destroyTestNetwork(tag);
    },
  };
}

/**
 * Starts a long-running process in a node and resolves once a line of its stdout or stderr matches
 * readyLine (at once when there is none). Rejects with the collected output if the process exits first
 * or is not ready within timeoutMs (default 10 s), and then leaves nothing running.
 */
export function startProcessIn(net: TestNetwork, nodeName: string, argv: string[], opts: ProcessOptions = {}): Promise<NodeProcess> {
  return startWith((a, o) => net.spawnIn(nodeName, a, o), argv, opts, `in node ${nodeName}`);
}

/** The same, in the host's own namespace (the controller, which reaches every node over the bridge). */
export function startProcess(argv: string[], opts: ProcessOptions = {}): Promise<NodeProcess> {
  const [cmd, ...args] = argv;
  if (cmd === undefined) throw new Error('startProcess needs a command');
  return startWith((_a, o) => spawn(cmd, args, o), argv, opts, 'on the host');
}

export interface ProcessOptions {
  readyLine?: RegExp;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

async function startWith(
  spawnIt: (argv: string[], opts: SpawnOptions) => ChildProcess,
  argv: string[],
  opts: ProcessOptions,
  where: string,
): Promise<NodeProcess> {
  const { timeoutMs = scaled(10_000), env, cwd } = opts;
  // A /g or /y pattern keeps lastIndex between test() calls and would skip matches.
  const readyLine = opts.readyLine && new RegExp(opts.readyLine.source, opts.readyLine.flags.replace(/[gy]/g, ''));
  const child = spawnIt(argv, { stdio: ['ignore', 'pipe', 'pipe'], env, cwd });
  let out = '';
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      exitInfo = `spawn error ${err.message}`;
      resolve();
    });
  });

  const stop = async () => {
    if (exitInfo !== undefined) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };
  const what = `${argv.join(' ')} ${where}`;

  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (err) void stop().then(() => reject(err));
      else resolve();
    };
    const timer = setTimeout(() => finish(new Error(`${what}: not ready after ${timeoutMs} ms; output:\n${out}`)), timeoutMs);
    for (const stream of [child.stdout, child.stderr]) {
      // Each stream keeps its own partial line: a chunk boundary must not split a ready line in two.
      let partial = '';
      stream?.setEncoding('utf8');
      stream?.on('data', (chunk: string) => {
        out += chunk;
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        if (readyLine && lines.some((l) => readyLine.test(l))) finish();
      });
    }
    // 'exit' can come before the last output has been read: wait for the pipes to close, but not for
    // long, since a grandchild holding them open would keep them open indefinitely.
    const drained = new Promise<void>((r) => child.once('close', () => r()));
    void exited
      .then(() => Promise.race([drained, new Promise((r) => setTimeout(r, 200))]))
      .then(() => finish(new Error(`${what}: exited (${exitInfo}) before it was ready; output:\n${out}`)));
    if (!readyLine) child.once('spawn', () => finish());
  });

  return { child, output: () => out, stop };
}
