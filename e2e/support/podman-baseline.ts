/**
 * What a podman migration benchmark needs besides a test cluster: the gap-detecting workload as a podman
 * image in several stores under one image id, and a plain TCP copy of a file (or a FIFO that podman is still
 * writing) from one node's network namespace to another's, as a podman user would move an exported
 * checkpoint (`nc`, no compression, no checksums, no fsync).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { startProcessIn, type NodeProcess, type TestNetwork } from './netns.js';
import { buildWorkload, workloadRootfs } from './workload-bin.js';

const run = promisify(execFile);

/**
 * Gives every store (its global podman flags, e.g. a node's `--root/--runroot/--tmpdir`) the image `image`
 * made from the directory `rootfs`, under the same image id. The default store imports it once (an import
 * stamps the time into the config, so a second import would have another id) and the others get a copy
 * through `podman save`/`load`, as a registry pull would give them. Stores that have the image keep it.
 */
export async function importRootfsImage(image: string, rootfs: string, scratch: string, stores: string[][]): Promise<string> {
  const has = (args: string[]) =>
    run('podman', [...args, 'image', 'inspect', '--format', '{{.Id}}', image]).then(
      (r) => r.stdout.trim(),
      () => undefined,
    );
  let id = await has([]);
  if (!id) {
    await run('sh', ['-c', 'tar -C "$1" -c . | podman import - "$2"', 'sh', rootfs, image]);
    id = await has([]);
    if (!id) throw new Error(`podman import of ${rootfs} as ${image} left no image`);
  }
  const missing: string[][] = [];
  for (const args of stores) {
    const theirs = await has(args);
    if (theirs && theirs !== id) throw new Error(`a store has ${image} with id ${theirs}, not ${id}; remove it there first`);
    if (!theirs) missing.push(args);
  }
  if (!missing.length) return id;
  const dir = await mkdtemp(path.join(scratch, 'image-'));
  try {
    const archive = path.join(dir, 'image.tar');
    await run('podman', ['save', '-o', archive, image]);
    for (const args of missing) await run('podman', [...args, 'load', '-i', archive]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return id;
}

/**
 * The workload (e2e/workload/ferry-workload.c) in a busybox image, in the default store and each given one.
 * The tag is the build's source hash, so an edited workload never runs from a stale image.
 */
export async function workloadImage(scratch: string, stores: string[][]): Promise<string> {
  const bin = await buildWorkload();
  const hash = path.basename(path.dirname(bin)).replace(/^ferry-workload-/, '');
  const image = `localhost/ferry-workload:${hash}`;
  const rootfs = await workloadRootfs(path.join(scratch, `workload-rootfs-${hash}`));
  await importRootfsImage(image, rootfs, scratch, stores);
  return image;
}

export interface Received {
  /** Where the receiver wrote it, on its side. */
  path: string;
  bytes: number;
}

export interface TcpCopier {
  /**
   * Streams `src` (a file, or a FIFO whose writer may not have opened it yet) over one TCP connection from
   * the sending node to the receiving node, which writes it to a fresh file in its directory. Resolves when
   * the receiver has closed that file.
   */
  copy(src: string): Promise<Received>;
  stop(): Promise<void>;
}

// Plain CommonJS for `node -e`: no TypeScript loader in the copy's path, and nothing but node:net and node:fs.
const RECEIVER = `
const net = require('node:net'); const fs = require('node:fs'); const path = require('node:path');
const [host, dir] = process.argv.slice(1); let n = 0;
const server = net.createServer((sock) => {
  const file = path.join(dir, 'received-' + (n++) + '.tar');
  const out = fs.createWriteStream(file);
  sock.on('error', (e) => console.log(JSON.stringify({ error: e.message })));
  out.on('error', (e) => console.log(JSON.stringify({ error: e.message })));
  out.on('close', () => console.log(JSON.stringify({ path: file, bytes: out.bytesWritten })));
  sock.pipe(out);
});
server.listen(0, host, () => console.log('listening ' + server.address().port));
`;
const SENDER = `
const net = require('node:net'); const fs = require('node:fs'); const readline = require('node:readline');
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const { src, host, port } = JSON.parse(line);
  const sock = net.connect(port, host);
  const input = fs.createReadStream(src, { highWaterMark: 1 << 20 });
  const fail = (e) => { console.log(JSON.stringify({ error: e.message })); sock.destroy(); input.destroy(); };
  input.on('error', fail); sock.on('error', fail);
  sock.on('close', (hadError) => { if (!hadError) console.log(JSON.stringify({ sent: sock.bytesWritten })); });
  input.pipe(sock);
});
console.log('ready');
`;

/**
 * Starts a receiver in `to` (listening on its address, writing under `dir`) and a sender in `from`, both
 * long-lived, so a copy pays for neither a process start nor a TCP listen: the fastest a podman user could
 * get with `nc -l > ck.tar` waiting on the target.
 */
export async function startTcpCopier(net: TestNetwork, from: string, to: string, dir: string): Promise<TcpCopier> {
  const host = net.node(to).address;
  const receiver = await startProcessIn(net, to, [process.execPath, '-e', RECEIVER, host, dir], { readyLine: /^listening \d+/ });
  let sender: NodeProcess;
  try {
    sender = await startProcessIn(net, from, [process.execPath, '-e', SENDER], { readyLine: /^ready/ });
  } catch (err) {
    await receiver.stop();
    throw err;
  }
  const port = Number(/^listening (\d+)/m.exec(receiver.output())?.[1]);
  const lines = (p: NodeProcess) => {
    const waiting: ((line: Record<string, unknown>) => void)[] = [];
    let partial = '';
    p.child.stdout?.on('data', (chunk: Buffer | string) => {
      const all = (partial + chunk.toString()).split('\n');
      partial = all.pop() ?? '';
      for (const l of all.filter((x) => x.startsWith('{'))) waiting.shift()?.(JSON.parse(l) as Record<string, unknown>);
    });
    return () => new Promise<Record<string, unknown>>((resolve) => waiting.push(resolve));
  };
  const nextReceived = lines(receiver);
  const nextSent = lines(sender);
  let busy = false;
  return {
    async copy(src) {
      if (busy) throw new Error('one copy at a time');
      busy = true;
      try {
        const received = nextReceived();
        const sent = nextSent();
        sender.child.stdin?.write(`${JSON.stringify({ src, host, port })}\n`);
        const first = await Promise.race([received, sent]);
        if (typeof first.error === 'string') throw new Error(`copy of ${src} failed: ${first.error}`);
        const r = await received;
        if (typeof r.error === 'string') throw new Error(`copy of ${src} failed on the receiver: ${r.error}`);
        const s = await sent;
        if (typeof s.error === 'string') throw new Error(`copy of ${src} failed on the sender: ${s.error}`);
        return { path: String(r.path), bytes: Number(r.bytes) };
      } finally {
        busy = false;
      }
    },
    async stop() {
      await Promise.all([sender.stop(), receiver.stop()]);
    },
  };
}
