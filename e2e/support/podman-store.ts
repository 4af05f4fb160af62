/**
 * Private podman stores (agent --podman-root) for tests that put several nodes on one machine, and their
 * removal, which needs care: conmon runs `podman container cleanup` after `rm` has returned, and that
 * podman mounts the store's overlay home while it runs, so a store removed under it would come back.
 */
import { execa } from 'execa';
import { readdir, readFile, rm, rmdir } from 'node:fs/promises';
import { defaultPodmanRunroot, podmanStoreArgs } from '../../agent/src/runtimes/podman.js';
import { waitFor } from './workload.js';

export interface PodmanStore {
  root: string;
  /** Global flags that point podman at this store. */
  args: string[];
}

export const podmanStore = (root: string): PodmanStore => ({ root, args: podmanStoreArgs(root) });

/**
 * Removes every container of the stores, waits for podman and conmon naming them to exit, unmounts what is
 * left and deletes the stores and their runroots. Throws, after cleaning, if podman left mounts behind.
 */
export async function removePodmanStores(stores: PodmanStore[]): Promise<void> {
  // Newest store first: a migrated container's stopped original in the source has the running copy's id.
  for (const s of [...stores].reverse()) await execa('podman', [...s.args, 'rm', '--all', '--force', '--time', '0'], { reject: false });
  await waitFor(
    () => processesNaming(stores.map((s) => s.root)),
    (pids) => pids.length === 0,
    { timeoutMs: 20_000, everyMs: 100, what: 'podman and conmon of the private stores to exit' },
  ).catch(() => undefined);
  const runroots = stores.map((s) => defaultPodmanRunroot(s.root));
  const left = await mountsUnder([...stores.map((s) => s.root), ...runroots]);
  for (const m of left.reverse()) await execa('umount', ['--lazy', m], { reject: false });
  for (const d of [...stores.map((s) => s.root), ...runroots]) await rm(d, { recursive: true, force: true });
  // Other agents on this machine may have stores there too: only empty parents go.
  for (const d of ['/run/ferry/podman', '/run/ferry']) await rmdir(d).catch(() => undefined);
  if (left.length) throw new Error(`podman left mounts under its private stores: ${left.join(', ')}`);
}

async function processesNaming(paths: string[]): Promise<string[]> {
  const pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
  const cmdlines = await Promise.all(pids.map((p) => readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')));
  return pids.filter((_, i) => paths.some((p) => cmdlines[i]?.split('\0').includes(p)));
}

async function mountsUnder(dirs: string[]): Promise<string[]> {
  const points = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((l) => l.split(' ')[4] ?? '');
  return points.filter((p) => dirs.some((d) => p === d || p.startsWith(`${d}/`)));
}
