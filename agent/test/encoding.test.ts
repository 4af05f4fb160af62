import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isFerryError } from '../src/errors.js';
import { type AtRest, type Compression, loadImageKey } from '../src/store/encoding.js';
import { ImageStore } from '../src/store/store.js';
import { manifestDraft } from './fixtures/manifest-draft.js';

const SECRET = Buffer.from('the password is hunter2; '.repeat(400));

async function keyFile(): Promise<string> {
  const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'ferry-key-')), 'key');
  await writeFile(file, randomBytes(32).toString('hex'));
  return file;
}

async function storeWith(atRest?: AtRest, root?: string): Promise<ImageStore> {
  const store = new ImageStore(root ?? (await mkdtemp(path.join(os.tmpdir(), 'ferry-enc-'))), atRest);
  await store.init();
  return store;
}

/** A checkpoint shaped as CRIU writes one: content images, the bookkeeping a child reads, a parent link. */
async function writeCheckpoint(store: ImageStore, id: string, opts: { parent?: string; encode?: boolean } = {}) {
  const pending = await store.begin(id, opts.encode === false ? { encode: false } : {});
  await mkdir(path.join(pending.dir, 'checkpoint'));
  await writeFile(path.join(pending.dir, 'checkpoint', 'pages-1.img'), SECRET);
  await writeFile(path.join(pending.dir, 'checkpoint', 'pagemap-1.img'), 'pagemap');
  await writeFile(path.join(pending.dir, 'checkpoint', 'inventory.img'), 'inventory');
  await writeFile(path.join(pending.dir, 'rootfs.tar'), Buffer.alloc(0));
  if (opts.parent) await symlink(store.parentPathFor(opts.parent), path.join(pending.dir, 'checkpoint', 'parent'));
  return pending.seal(manifestDraft(id, opts.parent));
}

async function allBytes(dir: string): Promise<Buffer> {
  const out: Buffer[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(await readFile(path.join(e.parentPath, e.name)));
  }
  return Buffer.concat(out);
}

const codeOf = (err: unknown) => (isFerryError(err) ? err.code : String(err));

for (const compression of ['none', 'gzip', 'zstd'] as Compression[]) {
  test(`${compression} + AES-256-GCM: no plain content at rest, and a plain view restores every byte`, async (t) => {
    const store = await storeWith({ compression, key: await loadImageKey(await keyFile()) });
    const m = await writeCheckpoint(store, 'ck-enc');
    t.is(m.encoding?.compression, compression);
    t.is(m.encoding?.encryption?.alg, 'aes-256-gcm');
    const byPath = new Map(m.files.map((f) => [f.path, f]));
    t.truthy(byPath.get('checkpoint/pages-1.img.fz')?.plain, 'memory is encoded');
    t.truthy(byPath.get('checkpoint/inventory.img'), "CRIU's inventory stays plain");
    t.truthy(byPath.get('checkpoint/pagemap-1.img'), 'pagemaps stay plain');
    t.false((await allBytes(store.dirOf('ck-enc'))).includes('hunter2'), 'the secret is nowhere in the stored files');
    if (compression !== 'none') t.true((byPath.get('checkpoint/pages-1.img.fz')?.size ?? 0) < SECRET.length / 4, 'compressed');
    await store.verify('ck-enc');
    const view = await store.plainView(await store.chain('ck-enc'));
    t.true(view.decoded);
    t.deepEqual(await readFile(path.join(view.dirOf('ck-enc'), 'checkpoint', 'pages-1.img')), SECRET);
    t.is(await readFile(path.join(view.dirOf('ck-enc'), 'checkpoint', 'inventory.img'), 'utf8'), 'inventory');
    await view.dispose();
    t.deepEqual(
      (await readdir(path.join(store.root, 'checkpoints'))).filter((n) => n.startsWith('.')),
      [],
      'the view is gone',
    );
  });
}

test('compression alone needs no key, and a transient checkpoint stays plain', async (t) => {
  const store = await storeWith({ compression: 'gzip' });
  const m = await writeCheckpoint(store, 'ck-gz');
  t.deepEqual(m.encoding, { compression: 'gzip' });
  const plain = await writeCheckpoint(store, 'ck-plain', { encode: false });
  t.is(plain.encoding, undefined);
  const view = await store.plainView(await store.chain('ck-plain'));
  t.false(view.decoded, 'a plain chain is used where it is');
  t.is(view.dirOf('ck-plain'), store.dirOf('ck-plain'));
});

test('a wrong or missing key is refused naming the key the checkpoint needs', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'ferry-enc-'));
  const key = await loadImageKey(await keyFile());
  await writeCheckpoint(await storeWith({ compression: 'none', key }, root), 'ck-k');
  const other = await storeWith({ compression: 'none', key: await loadImageKey(await keyFile()) }, root);
  const wrong = await t.throwsAsync(async () => other.plainView(await other.chain('ck-k')));
  t.is(codeOf(wrong), 'key_unavailable');
  t.regex(wrong?.message ?? '', new RegExp(`encrypted with key ${key.id}; this agent's key is k-`));
  const none = await storeWith(undefined, root);
  const missing = await t.throwsAsync(async () => none.plainView(await none.chain('ck-k')));
  t.regex(missing?.message ?? '', /this agent has no image key/);
  t.regex((missing as { hint?: string } | undefined)?.hint ?? '', /--image-key/);
});

test('a tampered encrypted file fails authentication, naming the file, even with its digest updated', async (t) => {
  const store = await storeWith({ compression: 'zstd', key: await loadImageKey(await keyFile()) });
  const m = await writeCheckpoint(store, 'ck-t');
  const stored = path.join(store.dirOf('ck-t'), 'checkpoint', 'pages-1.img.fz');
  const bytes = await readFile(stored);
  bytes[20] = (bytes[20] ?? 0) ^ 0xff;
  await writeFile(stored, bytes);
  t.is(codeOf(await t.throwsAsync(store.verify('ck-t'))), 'checkpoint_corrupt', 'the stored digest catches it first');
  // Someone who can write the files can also rewrite the manifest's digests; the cipher still refuses.
  const { createHash } = await import('node:crypto');
  const entry = m.files.find((f) => f.path === 'checkpoint/pages-1.img.fz');
  if (entry) entry.sha256 = createHash('sha256').update(bytes).digest('hex');
  await writeFile(path.join(store.dirOf('ck-t'), 'manifest.json'), JSON.stringify(m));
  const err = await t.throwsAsync(async () => store.plainView(await store.chain('ck-t')));
  t.is(codeOf(err), 'checkpoint_corrupt');
  t.regex(err?.message ?? '', /checkpoint\/pages-1\.img fails authentication/);
});

test("a chain's view keeps CRIU's relative parent links working, and export/import carries the encoding", async (t) => {
  const key = await loadImageKey(await keyFile());
  const a = await storeWith({ compression: 'gzip', key });
  await writeCheckpoint(a, 'ck-base');
  await writeCheckpoint(a, 'ck-child', { parent: 'ck-base' });
  const view = await a.plainView(await a.chain('ck-child'));
  const link = path.join(view.dirOf('ck-child'), 'checkpoint', 'parent');
  t.is(await readlink(link), '../../ck-base/checkpoint');
  t.deepEqual(await readFile(path.join(link, 'pages-1.img')), SECRET, 'the parent link resolves to the decoded parent');
  await view.dispose();

  const b = await storeWith({ compression: 'none', key });
  await b.importArchive(a.exportArchive('ck-base'));
  const imported = await b.importArchive(a.exportArchive('ck-child'));
  t.is(imported.encoding?.encryption?.keyId, key.id, 'the archive holds the encoded files, as stored');
  const there = await b.plainView(await b.chain('ck-child'));
  t.deepEqual(await readFile(path.join(there.dirOf('ck-child'), 'checkpoint', 'pages-1.img')), SECRET);
  await there.dispose();
});

test('a key file must hold 32 bytes', async (t) => {
  const file = path.join(await mkdtemp(path.join(os.tmpdir(), 'ferry-key-')), 'short');
  await writeFile(file, 'abcd');
  await t.throwsAsync(loadImageKey(file), { message: /is not 32 bytes/ });
  await writeFile(file, randomBytes(32));
  t.regex((await loadImageKey(file)).id, /^k-[0-9a-f]{12}$/);
});
