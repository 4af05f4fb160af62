/**
 * A counting busybox container under runc, from a bundle the test builds itself. `root` selects runc's
 * state directory: two "nodes" on one machine keep their containers apart by having one root each.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { busyboxRootfs, COUNT_FILE, COUNTER_ARGV, readCount, waitFor } from './workload.js';

const run = promisify(execFile);
const rootArgs = (root?: string) => (root ? ['--root', root] : []);

/** Starts the counter as `id` under runc root `root`, waits until it counts, and returns its count then. */
export async function startCounting(id: string, scratch: string, root: string, argv?: string[]): Promise<number> {
  await startRuncCounter(id, scratch, { root, ...(argv ? { argv } : {}) });
  return waitFor(
    () => runcCount(id, root),
    (n) => n >= 3,
    { what: `${id} to count` },
  );
}

/** Creates a bundle with a private copy of the busybox rootfs and starts the counter detached. */
export async function startRuncCounter(
  id: string,
  scratch: string,
  opts: {
    argv?: string[];
    root?: string;
    binds?: { source: string; destination: string }[];
    /** OCI annotations, e.g. the ones containerd's CRI plugin puts on a pod's containers. */
    annotations?: Record<string, string>;
  } = {},
): Promise<string> {
  const bundle = path.join(scratch, id);
  await mkdir(bundle, { recursive: true });
  await busyboxRootfs(path.join(bundle, 'rootfs'));
  await run('runc', ['spec'], { cwd: bundle });
  const spec = JSON.parse(await readFile(path.join(bundle, 'config.json'), 'utf8'));
  spec.process.terminal = false;
  spec.process.args = opts.argv ?? COUNTER_ARGV;
  spec.root.readonly = false;
  if (opts.annotations) spec.annotations = { ...spec.annotations, ...opts.annotations };
  for (const b of opts.binds ?? [])
    spec.mounts.push({ destination: b.destination, type: 'bind', source: b.source, options: ['rbind', 'rw'] });
  await writeFile(path.join(bundle, 'config.json'), JSON.stringify(spec));
  // Detached with stdio on /dev/null: nothing ties the container to this test process.
  await new Promise<void>((resolve, reject) => {
    const child = spawn('runc', [...rootArgs(opts.root), 'run', '--detach', '--bundle', bundle, id], { stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`runc run ${id} exited ${code}`))));
  });
  return bundle;
}

export async function runcCount(id: string, root?: string): Promise<number> {
  return readCount(async () => (await run('runc', [...rootArgs(root), 'exec', id, 'cat', COUNT_FILE])).stdout);
}

export async function runcRemove(id: string, root?: string): Promise<void> {
  await run('runc', [...rootArgs(root), 'delete', '--force', id]).catch(() => undefined);
}

/** The container's state as runc reports it, or undefined when runc has no such container. */
export async function runcState(id: string, root?: string): Promise<string | undefined> {
  const out = await run('runc', [...rootArgs(root), 'state', id]).catch(() => undefined);
  return out ? (JSON.parse(out.stdout) as { status: string }).status : undefined;
}
