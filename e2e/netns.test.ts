/**
 * The test network itself, on real namespaces, veths and a bridge: node to node and host to node over
 * TCP, a cut link that really stops traffic and a healed one that carries it again, recreation over a
 * crashed run's leftovers, and a teardown that leaves nothing of the tag behind.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import net from 'node:net';
import { promisify } from 'node:util';
import { createTestNetwork, destroyTestNetwork, type NodeProcess, startProcessIn, type TestNetwork } from './support/netns.js';

const exec = promisify(execFile);

// Per run, so concurrent runs neither share names nor split one subnet's route between two bridges.
const tag = `t${process.pid}`;
const subnet = `10.78.${process.pid % 250}.0/24`;
const PORT = 7007;

let network: TestNetwork | undefined;
let stale: TestNetwork | undefined;
let echo: NodeProcess | undefined;

test.after.always(async () => {
  await echo?.stop();
  await network?.destroy();
  await stale?.destroy();
  await destroyTestNetwork(tag);
});

function netOf(): TestNetwork {
  if (!network) throw new Error('the network was not created');
  return network;
}

const echoServer = (address: string) =>
  `require('net').createServer((s) => { s.on('data', (d) => s.write('echo:' + d)); s.on('end', () => s.end()); })` +
  `.listen(${PORT}, '${address}', () => console.log('echo listening on ${address}:${PORT}'))`;

/** A client that prints the first reply and exits 0, or exits non-zero on an error or after timeoutMs. */
const echoClient = (address: string, msg: string, timeoutMs: number) =>
  `const s = require('net').connect(${PORT}, '${address}');` +
  `const t = setTimeout(() => { console.error('timeout'); process.exit(3); }, ${timeoutMs});` +
  `s.on('connect', () => s.write('${msg}'));` +
  `s.on('data', (d) => { clearTimeout(t); process.stdout.write(String(d)); process.exit(0); });` +
  `s.on('error', (e) => { console.error(e.code || e.message); process.exit(2); });`;

async function clientIn(node: string, address: string, msg: string, timeoutMs: number): Promise<{ code: number | null; out: string }> {
  const child = netOf().spawnIn(node, [process.execPath, '-e', echoClient(address, msg, timeoutMs)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d) => (out += d));
  child.stderr?.on('data', (d) => (out += d));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  return { code, out };
}

function clientFromHost(address: string, msg: string, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port: PORT, timeout: timeoutMs });
    s.on('connect', () => s.write(msg));
    s.on('data', (d) => {
      s.destroy();
      resolve(String(d));
    });
    s.on('timeout', () => {
      s.destroy();
      reject(new Error('timeout'));
    });
    s.on('error', reject);
  });
}

async function netnsList(): Promise<string[]> {
  return (await exec('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '');
}

async function linkNames(): Promise<string[]> {
  return (JSON.parse((await exec('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname);
}

test.serial('recreating over a crashed run leaves one clean network, even with a process still inside', async (t) => {
  stale = await createTestNetwork(tag, ['a', 'b'], { subnet });
  // A live process keeps its namespace, and so its veth, alive after the name is gone.
  const sleeper = stale.spawnIn('b', ['sleep', '60'], { stdio: 'ignore' });
  network = await createTestNetwork(tag, ['a', 'b'], { subnet });
  t.is(sleeper.exitCode, null, 'the leftover process is still running');

  const mine = (await netnsList()).filter((n) => n.startsWith(`ferry-${tag}-`)).sort();
  t.deepEqual(mine, [`ferry-${tag}-a`, `ferry-${tag}-b`]);
  const links = await linkNames();
  t.deepEqual(links.filter((l) => l.startsWith(`fv-${tag}-`)).sort(), [`fv-${tag}-0`, `fv-${tag}-1`]);
  t.true(links.includes(`fbr-${tag}`));
  t.is(network.node('b').address, subnet.replace('.0/24', '.2'));
  t.is(network.hostAddress, subnet.replace('.0/24', '.254'));
});

test.serial('another network on a subnet in use is refused before anything is created', async (t) => {
  const other = `u${process.pid}`;
  await t.throwsAsync(createTestNetwork(other, ['x'], { subnet }), { message: /already in use/ });
  t.false((await linkNames()).includes(`fbr-${other}`));
});

test.serial('a node reaches another over TCP', async (t) => {
  const n = netOf();
  echo = await startProcessIn(n, 'b', [process.execPath, '-e', echoServer(n.node('b').address)], {
    readyLine: /^echo listening on /,
    timeoutMs: 10_000,
  });
  t.regex(echo.output(), /echo listening on/);
  const r = await clientIn('a', n.node('b').address, 'from-a', 5_000);
  t.is(r.code, 0, r.out);
  t.is(r.out, 'echo:from-a');
});

test.serial('the host reaches a node over TCP', async (t) => {
  t.is(await clientFromHost(netOf().node('b').address, 'from-host', 5_000), 'echo:from-host');
});

test.serial('a cut link carries nothing until healed', async (t) => {
  const n = netOf();
  const b = n.node('b').address;
  await n.cut('b');
  const cut = await clientIn('a', b, 'during-cut', 1_500);
  t.not(cut.code, 0, `a connection from a to a cut-off b must fail; got ${cut.out}`);
  await t.throwsAsync(clientFromHost(b, 'during-cut', 1_500));

  await n.heal('b');
  const healed = await clientIn('a', b, 'after-heal', 5_000);
  t.is(healed.code, 0, healed.out);
  t.is(healed.out, 'echo:after-heal');
  t.is(await clientFromHost(b, 'after-heal', 5_000), 'echo:after-heal');
});

test.serial('startProcessIn rejects with the output of a process that exits before it is ready', async (t) => {
  const err = await t.throwsAsync(
    startProcessIn(netOf(), 'a', [process.execPath, '-e', "console.error('no luck'); process.exit(4)"], {
      readyLine: /ready/,
      timeoutMs: 5_000,
    }),
  );
  t.regex(err?.message ?? '', /exited \(code 4\)[\s\S]*no luck/);
});

test.serial('startProcessIn rejects a process never ready, and stops it', async (t) => {
  const before = Date.now();
  await t.throwsAsync(startProcessIn(netOf(), 'a', ['sleep', '30'], { readyLine: /ready/, timeoutMs: 300 }), {
    message: /not ready after 300 ms/,
  });
  t.true(Date.now() - before < 5_000, 'sleep obeys SIGTERM, so no SIGKILL wait');
});

test.serial('destroy leaves no namespace, link or rule of the tag, and may be repeated', async (t) => {
  const n = netOf();
  await echo?.stop();
  t.not(echo?.child.exitCode ?? echo?.child.signalCode, null, 'the echo server has exited');
  await n.destroy();
  await n.destroy();
  await stale?.destroy();
  t.deepEqual(
    (await netnsList()).filter((l) => l.startsWith(`ferry-${tag}-`)),
    [],
  );
  const links = await linkNames();
  t.false(links.includes(`fbr-${tag}`));
  t.deepEqual(
    links.filter((l) => l.startsWith(`fv-${tag}-`)),
    [],
  );
  const rules = (await exec('iptables', ['-w', '-S', 'FORWARD'])).stdout;
  t.false(rules.includes(`ferry-netns:${tag}`));
});
