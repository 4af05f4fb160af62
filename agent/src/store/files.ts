/** Walking, hashing and syncing checkpoint files. */
import { createHash } from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { ManifestFile } from './manifest.js';

/** Every regular file under dir, as sorted relative paths; symlinks (CRIU's `parent`) are not content. */
export async function listFiles(dir: string, rel = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const child = path.posix.join(rel, entry.name);
    if (entry.isDirectory()) out.push(...(await listFiles(dir, child)));
    else if (entry.isFile()) out.push(child);
  }
  return out.sort();
}

const CHUNK = 1 << 20;

/**
 * Hashes a file and, when asked, fsyncs it through the same descriptor: one open per file, and the data
 * is read once. fsync on a read-only descriptor flushes the file's dirty pages on Linux.
 */
export async function hashFile(file: string, sync = false): Promise<{ size: number; sha256: string }> {
  const fh = await open(file, 'r');
  try {
    const hash = createHash('sha256');
    // Most CRIU images are a few hundred bytes: a buffer sized to the file, not a fixed MiB per file.
    const { size: statSize } = await fh.stat();
    const buf = Buffer.allocUnsafe(Math.max(1, Math.min(CHUNK, statSize + 1)));
    let size = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      size += bytesRead;
    }
    if (sync) await fh.sync();
    return { size, sha256: hash.digest('hex') };
  } finally {
    await fh.close();
  }
}

export async function describeFiles(dir: string, files: string[], sync: boolean): Promise<ManifestFile[]> {
  return Promise.all(files.map(async (p) => ({ path: p, ...(await hashFile(path.join(dir, p), sync)) })));
}

/**
 * fsync of a file or a directory through a read-only descriptor: on Linux that flushes a file's dirty
 * pages all the same, and a directory's entries.
 */
export async function syncPath(file: string): Promise<void> {
  const fh = await open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
