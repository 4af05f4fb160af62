/**
 * CRIU and the runtimes read plain image files. For a chain that has encoded checkpoints, a plain view is
 * a scratch tree laid out like the store (`<view>/<id>/...`, CRIU's relative `parent` links intact) in
 * which encoded files are decoded, and checked, and plain files are hard links to the store's. It lives
 * for one restore or one dump on top of a parent, then goes. A chain with nothing encoded needs no view:
 * the store's own directories are used and nothing is copied.
 */
import { randomBytes } from 'node:crypto';
import { copyFile, link, mkdir, readdir, readlink, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { type AtRest, dataKeyOf, decodeFile, plainPathOf } from './encoding.js';
import type { Manifest } from './manifest.js';

export interface PlainView {
  /** Where checkpoint id's plain files are. */
  dirOf(id: string): string;
  /** True when files were decoded into a scratch tree (and dirOf differs from the store's). */
  readonly decoded: boolean;
  dispose(): Promise<void>;
}

export async function plainView(
  chain: Manifest[],
  storeDirOf: (id: string) => string,
  scratchParent: string,
  atRest: AtRest | undefined,
): Promise<PlainView> {
  if (!chain.some((m) => m.encoding)) return { dirOf: storeDirOf, decoded: false, dispose: async () => undefined };
  const root = path.join(scratchParent, `.partial-plain-${randomBytes(6).toString('hex')}`);
  const view: PlainView = { dirOf: (id) => path.join(root, id), decoded: true, dispose: () => rm(root, { recursive: true, force: true }) };
  try {
    for (const m of chain) {
      const from = storeDirOf(m.id);
      const to = view.dirOf(m.id);
      const dataKey = m.encoding ? dataKeyOf(m.encoding, m.id, atRest?.key) : undefined;
      await Promise.all(
        m.files.map(async (f) => {
          const source = path.join(from, f.path);
          const target = path.join(to, plainPathOf(f));
          await mkdir(path.dirname(target), { recursive: true });
          if (f.plain && m.encoding) return decodeFile(source, target, f, m.id, m.encoding, dataKey);
          return link(source, target).catch(() => copyFile(source, target));
        }),
      );
      await copyLinks(from, to);
    }
    return view;
  } catch (err) {
    await view.dispose();
    throw err;
  }
}

/** CRIU's `parent` links, as they are: relative, so they point into the view as they pointed into the store. */
async function copyLinks(from: string, to: string, rel = ''): Promise<void> {
  for (const entry of await readdir(path.join(from, rel), { withFileTypes: true })) {
    const child = path.join(rel, entry.name);
    if (entry.isDirectory()) await copyLinks(from, to, child);
    else if (entry.isSymbolicLink()) {
      await mkdir(path.dirname(path.join(to, child)), { recursive: true });
      await symlink(await readlink(path.join(from, child)), path.join(to, child));
    }
  }
}
