/**
 * A fingerprint of a bundle's filesystem as it is on disk: every entry's path, type, mode, size, inode and
 * change time (ctime, which the kernel sets on any write and user space cannot set back), plus the spec's
 * bytes. Equal fingerprints mean the tree was not touched in between, so a restore on the node that took
 * the checkpoint can use the original bundle in place, as `runc restore` does, instead of unpacking a copy.
 */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { setImmediate as yieldToLoop } from 'node:timers/promises';

/**
 * Each directory is read and its entries stat'ed synchronously, yielding to the event loop between
 * directories: a rootfs is hundreds of entries in the page cache, which synchronous calls read in
 * microseconds each, while one thread-pool round trip per entry made this 5-8 ms on a restore's
 * critical path. Yielding bounds the blocking to one directory's worth.
 */
export async function bundleFingerprint(bundle: string, rootfs: string): Promise<string> {
  const hash = createHash('sha256');
  hash.update(readFileSync(path.join(bundle, 'config.json')));
  await walk(rootfs, '', hash);
  return hash.digest('hex');
}

async function walk(root: string, rel: string, hash: ReturnType<typeof createHash>): Promise<void> {
  const entries = readdirSync(path.join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  const subdirs: string[] = [];
  for (const e of entries) {
    const st = lstatSync(path.join(root, rel, e.name), { bigint: true, throwIfNoEntry: false });
    if (!st) continue;
    const name = path.posix.join(rel, e.name);
    hash.update(`${name}\0${st.mode}\0${st.size}\0${st.ino}\0${st.ctimeNs}\0${st.mtimeNs}\n`);
    if (e.isDirectory()) subdirs.push(name);
  }
  for (const name of subdirs) {
    await yieldToLoop();
    await walk(root, name, hash);
  }
}
