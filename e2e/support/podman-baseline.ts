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
import type { TestNetwork } from './netns.js';
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
  let error;
  sock.on('error', (e) => { error = error || e.message; out.destroy(); });
  out.on('error', (e) => { error = error || e.message; sock.destroy(); });
  out.on('close', () => console.log(JSON.stringify(error ? { error, path: file } : { path: file, bytes: out.bytesWritten })));
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
  let error;
  const fail = (e) => { error = error || e.message; sock.destroy(); input.destroy(); };
  input.on('error', fail);
  sock.on('error', fail);
  sock.on('close', () => console.log(JSON.stringify(error ? { error } : { sent: sock.bytesWritten })));
  input.pipe(sock);
});
console.log('ready');
`;

/** A long-lived helper in a node: JSON lines out, commands in; ready once it printed its first line. */
interface Helper {
  first: string;
  next(): Promise<Record<string, unknown>>;
  send(line: string): void;
  stop(): Promise<void>;
}

async function startHelper(net: TestNetwork, node: string, argv: string[]): Promise<Helper> {
  const child = net.spawnIn(node, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
  const waiting: ((line: Record<string, unknown>) => void)[] = [];
  const queued: Record<string, unknown>[] = [];
  let stderr = '';
  let exited: string | undefined;
  const gone = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const first = await new Promise<string>((resolve, reject) => {
    let partial = '';
    let ready = false;
    child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) {
        if (!ready) {
          ready = true;
          resolve(l);
          continue;
        }
        if (!l.startsWith('{')) continue;
        const msg = JSON.parse(l) as Record<string, unknown>;
        const w = waiting.shift();
        if (w) w(msg);
        else queued.push(msg);
      }
    });
    child.once('exit', (code, signal) => {
      exited = signal ?? String(code);
      const why = { error: `helper in node ${node} exited (${exited}): ${stderr.trim()}` };
      if (!ready) reject(new Error(why.error));
      for (const w of waiting.splice(0)) w(why);
    });
    child.once('error', reject);
    setTimeout(() => {
      if (ready) return;
      child.kill('SIGKILL');
      reject(new Error(`helper in node ${node} not ready after 10 s: ${stderr.trim()}`));
    }, 10_000).unref();
  });
  return {
    first,
    next: () => {
      const q = queued.shift();
      if (q) return Promise.resolve(q);
      if (exited !== undefined) return Promise.resolve({ error: `helper in node ${node} exited (${exited}): ${stderr.trim()}` });
      return new Promise((resolve) => waiting.push(resolve));
    },
    send: (line) => {
      child.stdin?.write(`${line}\n`);
    },
    stop: async () => {
      if (exited === undefined) child.kill('SIGTERM');
      await gone;
    },
  };
}

/**
 * Starts a receiver in `to` (listening on its address, writing under `dir`) and a sender in `from`, both
 * long-lived, so a copy pays for neither a process start nor a TCP listen: the fastest a podman user could
 * get with `nc -l > ck.tar` already waiting on the target.
 */
export async function startTcpCopier(net: TestNetwork, from: string, to: string, dir: string): Promise<TcpCopier> {
  const host = net.node(to).address;
  const receiver = await startHelper(net, to, [process.execPath, '-e', RECEIVER, host, dir]);
  let sender: Helper;
  try {
    sender = await startHelper(net, from, [process.execPath, '-e', SENDER]);
  } catch (err) {
    await receiver.stop();
    throw err;
  }
  const port = Number(/^listening (\d+)/.exec(receiver.first)?.[1]);
  if (!port) {
    await Promise.all([receiver.stop(), sender.stop()]);
    throw new Error(`the receiver in node ${to} did not say where it listens: ${receiver.first}`);
  }
  let busy = false;
  return {
    async copy(src) {
      if (busy) throw new Error('one copy at a time');
      busy = true;
      try {
        sender.send(JSON.stringify({ src, host, port }));
        // The sender answers once its socket closed, which the receiver does after the last byte: a sender
        // that never connected has no receiver line to wait for.
        const s = await sender.next();
        if (typeof s.error === 'string') throw new Error(`sending ${src} failed: ${s.error}`);
        const r = await receiver.next();
        if (typeof r.error === 'string') throw new Error(`receiving ${src} failed: ${r.error}`);
        if (Number(r.bytes) !== Number(s.sent)) throw new Error(`sent ${s.sent} bytes of ${src}, received ${r.bytes}`);
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
