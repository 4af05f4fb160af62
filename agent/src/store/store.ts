/**
 * The agent's image store: one directory per checkpoint under `<root>/checkpoints/`. A checkpoint is
 * written into a hidden sibling (`.partial-<id>`), sealed with a manifest, synced, then renamed into
 * place, so a listed checkpoint is always complete. Partial and complete directories sit at the same depth
 * so that CRIU's relative parent links (`../../<parent>/checkpoint`) resolve before and after the rename.
 */
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readdir, symlink, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { packDirectory, unpackInto } from './archive.js';
import { describeFiles, listFiles, syncPath } from './files.js';
import { assertCheckpointId } from './ids.js';
import { type AtRest, atRestActive, encodeFile, newEncoding, staysPlain } from './encoding.js';
import { MANIFEST_FILE, MANIFEST_VERSION, type Manifest, type ManifestFile } from './manifest.js';
import { type PlainView, plainView } from './plain-view.js';

const PARTIAL_PREFIX = '.partial-';

export type ManifestDraft = Omit<Manifest, 'version' | 'files' | 'totalBytes' | 'timings'> & {
  timings: { checkpointMs: number; [phase: string]: number };
};

export interface PendingCheckpoint {
  id: string;
  /** Where the runtime writes; not visible to readers until sealed. */
  dir: string;
  /** Starts hashing and syncing `rel` (a file, or every file under a directory) now; seal reuses the results. */
  prepare(rel: string): void;
  seal(draft: ManifestDraft): Promise<Manifest>;
  abort(): Promise<void>;
}

export class ImageStore {
  readonly root: string;
  private readonly checkpointsDir: string;

  constructor(
    root: string,
    /** Compression and encryption of the checkpoints kept here (encoding.ts); plain without. */
    readonly atRest?: AtRest,
  ) {
    this.root = path.resolve(root);
    this.checkpointsDir = path.join(this.root, 'checkpoints');
  }

  async init(): Promise<void> {
    await mkdir(this.checkpointsDir, { recursive: true });
    // Checkpoints hold whole process memories: only root may look inside, whatever the umask made of it.
    await chmod(this.root, 0o700);
    // Leftovers of writes interrupted by a crash are never complete checkpoints.
    for (const name of await readdir(this.checkpointsDir)) {
      if (name.startsWith(PARTIAL_PREFIX)) await rm(path.join(this.checkpointsDir, name), { recursive: true, force: true });
    }
  }

  dirOf(id: string): string {
    return path.join(this.checkpointsDir, assertCheckpointId(id));
  }

  /** The parent's CRIU images as CRIU wants them: relative to this checkpoint's `checkpoint/` dir. */
  parentPathFor(parentId: string): string {
    return path.posix.join('..', '..', assertCheckpointId(parentId, 'parent'), 'checkpoint');
  }

  /**
   * encode: false keeps this checkpoint plain whatever the store's at-rest settings (a migration's own,
   * which live seconds). An encoded checkpoint's content files are read once, at seal: hashed, encoded,
   * written and synced in one pass; only the files that stay plain are hashed and synced as they come.
   */
  async begin(id: string, opts: { encode?: boolean } = {}): Promise<PendingCheckpoint> {
    assertCheckpointId(id);
    if (await this.exists(id)) throw new FerryError('conflict', `checkpoint ${id} already exists`);
    const dir = path.join(this.checkpointsDir, PARTIAL_PREFIX + id);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const atRest = (opts.encode ?? true) && atRestActive(this.atRest) ? this.atRest : undefined;
    const prepared = new Map<string, Promise<ManifestFile[]>>();
    return {
      id,
      dir,
      prepare: (rel) => {
        const work = listFiles(dir, rel).then((files) => describeFiles(dir, atRest ? files.filter(staysPlain) : files, true));
        work.catch(() => undefined); // seal reports it; an aborted checkpoint never asks
        prepared.set(rel, work);
      },
      seal: (draft) => this.seal(dir, id, draft, prepared, atRest),
      abort: async () => {
        await Promise.allSettled(prepared.values());
        await rm(dir, { recursive: true, force: true });
      },
    };
  }

  private async seal(
    dir: string,
    id: string,
    draft: ManifestDraft,
    prepared: Map<string, Promise<ManifestFile[]>>,
    atRest: AtRest | undefined,
  ): Promise<Manifest> {
    const started = performance.now();
    const done = (await Promise.all(prepared.values())).flat();
    const known = new Set(done.map((f) => f.path));
    const rest = (await listFiles(dir)).filter((f) => !known.has(f));
    const content = atRest ? rest.filter((f) => !staysPlain(f)) : [];
    const plain = atRest ? rest.filter(staysPlain) : rest;
    const [described, encoded] = await Promise.all([
      describeFiles(dir, plain, true),
      atRest ? this.encode(dir, id, content, atRest) : undefined,
    ]);
    const files = [...done, ...described, ...(encoded?.files ?? [])].sort((a, b) => a.path.localeCompare(b.path));
    const manifest: Manifest = {
      ...draft,
      ...(encoded ? { encoding: encoded.encoding } : {}),
      version: MANIFEST_VERSION,
      files,
      totalBytes: files.reduce((n, f) => n + f.size, 0),
      timings: { ...draft.timings, sealMs: 0 },
    };
    manifest.timings.sealMs = Math.round((performance.now() - started) * 1000) / 1000;
    await writeFile(path.join(dir, MANIFEST_FILE), JSON.stringify(manifest, null, 1), { flush: true });
    await syncPath(dir);
    await rename(dir, this.dirOf(id));
    await syncPath(this.checkpointsDir);
    return manifest;
  }

  /** Replaces each content file by its encoded form (encoding.ts), synced before the plain one goes. */
  private async encode(dir: string, id: string, rels: string[], atRest: AtRest) {
    const { encoding, dataKey } = newEncoding(atRest, id);
    const files = await Promise.all(
      rels.map(async (rel) => {
        const entry = await encodeFile(dir, rel, id, encoding, dataKey);
        await syncPath(path.join(dir, entry.path));
        await rm(path.join(dir, rel));
        return entry;
      }),
    );
    return { encoding, files };
  }

  /** After a dump on a decoded parent: CRIU's `parent` link points at the decoded copy; make it the store's. */
  async relinkParent(pendingDir: string, parentId: string): Promise<void> {
    const link = path.join(pendingDir, 'checkpoint', 'parent');
    await rm(link, { force: true });
    await symlink(this.parentPathFor(parentId), link);
  }

  /** The chain's files as CRIU reads them: the store's own directories, or decoded into a scratch tree (plain-view.ts). */
  async plainView(chain: Manifest[]): Promise<PlainView> {
    return plainView(chain, (id) => this.dirOf(id), this.checkpointsDir, this.atRest);
  }

  async exists(id: string): Promise<boolean> {
    return readFile(path.join(this.dirOf(id), MANIFEST_FILE)).then(
      () => true,
      () => false,
    );
  }

  async get(id: string): Promise<Manifest> {
    const raw = await readFile(path.join(this.dirOf(id), MANIFEST_FILE), 'utf8').catch(() => undefined);
    if (raw === undefined) {
      throw new FerryError('checkpoint_not_found', `checkpoint ${id} does not exist on this node`, {
        hint: 'list checkpoints with `ferry checkpoints`',
      });
    }
    return parseManifest(raw, id);
  }

  async list(): Promise<Manifest[]> {
    const names = (await readdir(this.checkpointsDir)).filter((n) => !n.startsWith('.'));
    const manifests = await Promise.all(names.map((n) => this.get(n).catch(() => undefined)));
    return manifests.filter((m): m is Manifest => m !== undefined).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /** A checkpoint's manifest and its parents', newest first, without reading the images. */
  async chain(id: string): Promise<Manifest[]> {
    const chain: Manifest[] = [];
    for (let cur: string | undefined = id; cur; cur = chain.at(-1)?.parent) {
      if (chain.some((m) => m.id === cur)) throw corrupt(id, `parent chain loops at ${cur}`);
      chain.push(await this.get(cur));
    }
    return chain;
  }

  /**
   * Re-reads every file of a checkpoint and of its parent chain against the manifests. Restore calls this
   * first: a flipped byte must fail here, clearly, and not halfway through CRIU's restore.
   */
  async verify(id: string, known?: Manifest[]): Promise<Manifest[]> {
    // A caller that already read the chain (restore) passes it rather than have it read again.
    const chain = known ?? (await this.chain(id));
    for (const manifest of chain) await this.verifyFiles(manifest);
    return chain;
  }

  private async verifyFiles(manifest: Manifest, dir = this.dirOf(manifest.id)): Promise<void> {
    const present = (await listFiles(dir)).filter((f) => f !== MANIFEST_FILE);
    checkPresence(manifest, present);
    const actual = await describeFiles(
      dir,
      manifest.files.map((f) => f.path),
      false,
    );
    checkContent(manifest, actual);
  }

  /**
   * Takes in an archive made by `export`: unpacked aside, checked file by file against the manifest it
   * carries, synced, and only then listed. The parent of an incremental checkpoint must already be here.
   */
  async importArchive(source: Readable): Promise<Manifest> {
    const dir = path.join(this.checkpointsDir, `${PARTIAL_PREFIX}import-${randomBytes(6).toString('hex')}`);
    await mkdir(dir, { recursive: true });
    try {
      const written = (await unpackInto(source, dir)).filter((f) => f.path !== MANIFEST_FILE);
      const raw = await readFile(path.join(dir, MANIFEST_FILE), 'utf8').catch(() => undefined);
      if (raw === undefined) {
        throw new FerryError('bad_request', 'the archive has no manifest.json', {
          hint: 'import archives exported by a Ferry agent (GET /v1/checkpoints/:id/archive)',
        });
      }
      const id = assertCheckpointId(claimedId(raw), 'manifest.id');
      const manifest = parseManifest(raw, id);
      if (await this.exists(id)) throw new FerryError('conflict', `checkpoint ${id} is already on this node`);
      if (manifest.parent && !(await this.exists(manifest.parent))) {
        throw new FerryError('conflict', `checkpoint ${id} builds on ${manifest.parent}, which is not on this node`, {
          hint: `import ${manifest.parent} first`,
        });
      }
      // Hashed as they were written: checked without reading them back, then made durable.
      checkPresence(
        manifest,
        written.map((f) => f.path),
      );
      checkContent(
        manifest,
        manifest.files.map((f) => written.find((w) => w.path === f.path)),
      );
      await Promise.all(written.map((f) => syncPath(path.join(dir, f.path))));
      await syncPath(dir);
      await rename(dir, this.dirOf(id));
      await syncPath(this.checkpointsDir);
      return manifest;
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  exportArchive(id: string): Readable {
    return packDirectory(this.dirOf(id));
  }

  async delete(id: string): Promise<void> {
    await this.get(id);
    const children = (await this.list()).filter((m) => m.parent === id).map((m) => m.id);
    if (children.length) {
      throw new FerryError('conflict', `checkpoint ${id} is the parent of ${children.join(', ')}`, {
        hint: 'delete the checkpoints that build on it first',
      });
    }
    // Rename first so that a crash mid-delete leaves a partial dir (cleaned at start), never half a checkpoint.
    const doomed = path.join(this.checkpointsDir, `${PARTIAL_PREFIX}${id}-deleting`);
    await rename(this.dirOf(id), doomed);
    await rm(doomed, { recursive: true, force: true });
  }
}

function checkPresence(manifest: Manifest, present: string[]): void {
  const expected = new Set(manifest.files.map((f) => f.path));
  const extra = present.filter((f) => !expected.has(f));
  if (extra.length) throw corrupt(manifest.id, `unexpected files: ${extra.join(', ')}`);
  const missing = manifest.files.filter((f) => !present.includes(f.path));
  if (missing.length) throw corrupt(manifest.id, `missing files: ${missing.map((f) => f.path).join(', ')}`);
}

/** `actual` lists the manifest's files in the manifest's order. */
function checkContent(manifest: Manifest, actual: (ManifestFile | undefined)[]): void {
  const bad = manifest.files.filter((f, i) => actual[i]?.sha256 !== f.sha256 || actual[i]?.size !== f.size);
  if (bad.length) throw corrupt(manifest.id, `content differs from the manifest in ${bad.map((f) => f.path).join(', ')}`);
}

function corrupt(id: string, why: string): FerryError {
  return new FerryError('checkpoint_corrupt', `checkpoint ${id} is damaged: ${why}`, {
    hint: 'this checkpoint cannot be restored safely; restore an older checkpoint or take a new one',
    details: { checkpoint: id },
  });
}

/** The id an archive's manifest claims, before anything else of it is trusted. */
function claimedId(raw: string): string {
  const hint = 'import archives exported by a Ferry agent (GET /v1/checkpoints/:id/archive)';
  let id: unknown;
  try {
    id = (JSON.parse(raw) as { id?: unknown } | null)?.id;
  } catch {
    throw new FerryError('bad_request', "the archive's manifest.json is not valid JSON", { hint });
  }
  if (typeof id !== 'string') throw new FerryError('bad_request', "manifest.id: the archive's manifest names no checkpoint", { hint });
  return id;
}

const isFileEntry = (f: unknown): f is ManifestFile =>
  typeof f === 'object' &&
  f !== null &&
  typeof (f as ManifestFile).path === 'string' &&
  Number.isSafeInteger((f as ManifestFile).size) &&
  typeof (f as ManifestFile).sha256 === 'string';

function parseManifest(raw: string, id: string): Manifest {
  let m: Manifest | null;
  try {
    m = JSON.parse(raw) as Manifest | null;
  } catch {
    throw corrupt(id, 'manifest.json is not valid JSON');
  }
  if (typeof m !== 'object' || m === null || m.version !== MANIFEST_VERSION || m.id !== id || !Array.isArray(m.files)) {
    throw corrupt(id, 'manifest.json does not describe this checkpoint');
  }
  if (!m.files.every(isFileEntry)) throw corrupt(id, 'manifest.json lists a file without path, size and sha256');
  return m;
}
