/**
 * A checkpoint as one tar stream, laid out as podman and CRI-O export theirs (checkpoint/, config.dump,
 * spec.dump, rootfs-diff.tar, stats-dump) plus Ferry's manifest.json. Import admits only regular files,
 * directories and CRIU's relative `parent` link, and never a path that leaves the checkpoint directory.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable, Transform } from 'node:stream';
import { createHash } from 'node:crypto';
import type { ManifestFile } from './manifest.js';
import tar from 'tar-stream';
import { FerryError } from '../errors.js';

/**
 * How much of a file may queue in memory while a write is in flight. Chunks arrive at socket size (16-64
 * KiB); with the default 16 KiB each one waits for its own write on libuv's thread pool (a 64 MiB
 * checkpoint took 260-370 ms to unpack from the network, 85 ms from 1 MiB chunks). With room to queue,
 * fs.WriteStream writes what piled up with one writev.
 */
const WRITE_BATCH_BYTES = 4 << 20;

const PARENT_LINK = /^(\.\.\/){2}[a-z0-9][a-z0-9_-]{0,63}\/checkpoint$/;

async function addTree(pack: tar.Pack, root: string, rel: string): Promise<void> {
  for (const entry of (await readdir(path.join(root, rel), { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const name = path.posix.join(rel, entry.name);
    const full = path.join(root, name);
    if (entry.isDirectory()) {
      pack.entry({ name: `${name}/`, type: 'directory', mode: 0o755 });
      await addTree(pack, root, name);
    } else if (entry.isSymbolicLink()) {
      pack.entry({ name, type: 'symlink', linkname: await readlink(full) });
    } else if (entry.isFile()) {
      const st = await lstat(full);
      const sink = pack.entry({ name, size: st.size, mode: st.mode & 0o777, mtime: st.mtime });
      await pipeline(createReadStream(full, { highWaterMark: 1 << 20 }), sink);
    }
  }
}

/** Streams the directory as a tar archive; the returned stream ends when every file is written. */
export function packDirectory(dir: string): Readable {
  const pack = tar.pack();
  addTree(pack, dir, '').then(
    () => pack.finalize(),
    (err: Error) => pack.destroy(err),
  );
  // tar-stream streams are streamx streams; HTTP servers and pipelines want a Node Readable.
  return Readable.from(pack);
}

/** No checkpoint file needs more; the kernel refuses longer (NAME_MAX 255 bytes per component). */
const MAX_ENTRY_NAME = 1024;
const MAX_COMPONENT_BYTES = 255;
const shown = (name: string) => JSON.stringify(name.length > 80 ? `${name.slice(0, 80)}...` : name);

function safeTarget(root: string, name: string): string {
  if (
    name.length > MAX_ENTRY_NAME ||
    name.includes('\0') ||
    name.split('/').some((part) => Buffer.byteLength(part) > MAX_COMPONENT_BYTES)
  ) {
    throw new FerryError('bad_request', `archive entry ${shown(name)} has a name no checkpoint file has (too long, or a NUL byte)`, {
      hint: 'only archives exported by Ferry, podman or CRI-O can be imported',
    });
  }
  const clean = path.posix.normalize(name).replace(/\/+$/, '');
  const target = path.resolve(root, clean);
  if (clean.startsWith('/') || clean === '..' || clean.startsWith('../') || !target.startsWith(root + path.sep)) {
    throw new FerryError('bad_request', `archive entry ${shown(name)} points outside the checkpoint`, {
      hint: 'only archives exported by Ferry, podman or CRI-O can be imported',
    });
  }
  return target;
}

/**
 * Extracts a tar stream into dir (which must exist), refusing anything that could escape it. Each file is
 * hashed as it is written, so the caller can check it against a manifest without reading it back.
 */
export async function unpackInto(source: Readable, dir: string): Promise<ManifestFile[]> {
  const written: ManifestFile[] = [];
  const root = path.resolve(dir);
  const extract = tar.extract();
  const feeding = pipeline(source, extract as unknown as NodeJS.WritableStream).catch((err: Error) => err);
  try {
    for await (const entry of extract) {
      const { header } = entry;
      const target = safeTarget(root, header.name);
      if (header.type === 'file') {
        await mkdir(path.dirname(target), { recursive: true });
        const hash = createHash('sha256');
        let size = 0;
        const hashing = new Transform({
          transform(chunk: Buffer, _enc, done) {
            hash.update(chunk);
            size += chunk.length;
            done(null, chunk);
          },
        });
        await pipeline(
          entry as unknown as NodeJS.ReadableStream,
          hashing,
          createWriteStream(target, { mode: 0o600, highWaterMark: WRITE_BATCH_BYTES }),
        );
        written.push({ path: path.posix.relative(root, target.split(path.sep).join(path.posix.sep)), size, sha256: hash.digest('hex') });
        continue;
      }
      if (header.type === 'directory') await mkdir(target, { recursive: true });
      else if (header.type === 'symlink' && path.basename(target) === 'parent' && PARENT_LINK.test(header.linkname ?? '')) {
        await mkdir(path.dirname(target), { recursive: true });
        await symlink(header.linkname as string, target);
      } else {
        throw new FerryError('bad_request', `archive entry '${header.name}' has type ${header.type}, which a checkpoint never holds`);
      }
      entry.resume();
    }
  } catch (err) {
    source.destroy();
    extract.destroy();
    await feeding;
    throw err;
  }
  const failed = await feeding;
  if (failed) throw new FerryError('bad_request', `the archive could not be read: ${failed.message}`);
  return written.sort((a, b) => a.path.localeCompare(b.path));
}
