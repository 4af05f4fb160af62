/**
 * A fingerprint of a bundle's filesystem as it is on disk: every entry's path, type, mode, size, inode and
 * change time (ctime, which the kernel sets on any write and user space cannot set back), plus the spec's
 * bytes. Equal fingerprints mean the tree was not touched in between, so a restore on the node that took
 * the checkpoint can use the original bundle in place, as `runc restore` does, instead of unpacking a copy.
 */
import { createHash } from 'node:crypto';
import { lstat, readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export async function bundleFingerprint(bundle: string, rootfs: string): Promise<string> {
  const hash = createHash('sha256');
  hash.update(await readFile(path.join(bundle, 'config.json')));
  await walk(rootfs, '', hash);
  return hash.digest('hex');
}

async function walk(root: string, rel: string, hash: ReturnType<typeof createHash>): Promise<void> {
  const entries = (await readdir(path.join(root, rel), { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
  const stats = await Promise.all(entries.map((e) => lstat(path.join(root, rel, e.name), { bigint: true })));
  for (const [i, e] of entries.entries()) {
    const st = stats[i];
    if (!st) continue;
    const name = path.posix.join(rel, e.name);
    hash.update(`${name}\0${st.mode}\0${st.size}\0${st.ino}\0${st.ctimeNs}\0${st.mtimeNs}\n`);
    if (e.isDirectory()) await walk(root, name, hash);
  }
}
