/**
 * Moving a container's writable layer and CRIU's images between a checkpoint and a runtime's own
 * directories, for drivers that restore into a container the runtime created (docker, podman in place).
 */
import { copyFile, link, mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { runCommand } from './exec.js';

/**
 * The overlay upper directory holds exactly what the container changed, deletions as whiteouts (character
 * devices 0/0) and replaced directories as opaque ones (an xattr): packed as they are, numeric owners kept.
 */
export async function packUpperDir(upper: string, archive: string): Promise<void> {
  await runCommand('tar', ['-C', upper, '--numeric-owner', '--xattrs', '-cf', archive, '.']);
}

/** Into the upper directory of a container that is not mounted: the next mount sees the changes. */
export async function unpackUpperDir(archive: string, upper: string): Promise<void> {
  await runCommand('tar', ['-C', upper, '--numeric-owner', '--xattrs', '--same-owner', '-xpf', archive]);
}

/** Hard links keep a restore of a large image cheap; another filesystem gets copies. */
export async function linkOrCopyTree(from: string, to: string): Promise<void> {
  await mkdir(to, { recursive: true });
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const src = path.join(from, entry.name);
    const dst = path.join(to, entry.name);
    if (entry.isDirectory()) await linkOrCopyTree(src, dst);
    else await link(src, dst).catch(() => copyFile(src, dst));
  }
}
