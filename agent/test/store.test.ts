import test from 'ava';
import { mkdtemp, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import type { FerryError } from '../src/errors.js';
import { isFerryError } from '../src/errors.js';
import { ImageStore } from '../src/store/store.js';
import { manifestDraft } from './fixtures/manifest-draft.js';

async function newStore(): Promise<ImageStore> {
  const store = new ImageStore(await mkdtemp(path.join(os.tmpdir(), 'ferry-store-')));
  await store.init();
  return store;
}

async function writeCheckpoint(store: ImageStore, id: string, parent?: string) {
  const pending = await store.begin(id);
  await mkdir(path.join(pending.dir, 'checkpoint'));
  await writeFile(path.join(pending.dir, 'checkpoint', 'pages-1.img'), Buffer.alloc(8192, 7));
  await writeFile(path.join(pending.dir, 'spec.dump'), '{"ociVersion":"1.0.2"}');
  if (parent) await symlink(store.parentPathFor(parent), path.join(pending.dir, 'checkpoint', 'parent'));
  return { pending, manifest: await pending.seal(manifestDraft(id, parent)) };
}

test('the store is private to its owner: checkpoints hold whole process memories', async (t) => {
  const store = await newStore();
  t.is((await stat(store.root)).mode & 0o777, 0o700);
});

test('a checkpoint is listed only once sealed', async (t) => {
  const store = await newStore();
  const pending = await store.begin('ck-a');
  await writeFile(path.join(pending.dir, 'spec.dump'), '{}');
  t.deepEqual(await store.list(), []);
  t.false(await store.exists('ck-a'));
  await pending.seal(manifestDraft('ck-a'));
  t.deepEqual(
    (await store.list()).map((m) => m.id),
    ['ck-a'],
  );
});

test('the manifest records every file with size and sha256', async (t) => {
  const store = await newStore();
  const { manifest } = await writeCheckpoint(store, 'ck-b');
  t.deepEqual(
    manifest.files.map((f) => f.path),
    ['checkpoint/pages-1.img', 'spec.dump'],
  );
  const pages = manifest.files[0];
  t.is(pages?.size, 8192);
  t.regex(pages?.sha256 ?? '', /^[0-9a-f]{64}$/);
  t.is(manifest.totalBytes, 8192 + 22);
  t.deepEqual(await store.verify('ck-b'), [manifest]);
});

test('a flipped byte makes verify fail and names the file', async (t) => {
  const store = await newStore();
  await writeCheckpoint(store, 'ck-c');
  const file = path.join(store.dirOf('ck-c'), 'checkpoint', 'pages-1.img');
  const buf = await readFile(file);
  buf[100] = (buf[100] ?? 0) ^ 0xff;
  await writeFile(file, buf);
  const err = await t.throwsAsync(store.verify('ck-c'));
  t.true(isFerryError(err) && err.code === 'checkpoint_corrupt');
  t.regex(err?.message ?? '', /pages-1\.img/);
});

test('a missing or an added file makes verify fail', async (t) => {
  const store = await newStore();
  await writeCheckpoint(store, 'ck-d');
  await writeFile(path.join(store.dirOf('ck-d'), 'checkpoint', 'extra.img'), 'x');
  await t.throwsAsync(store.verify('ck-d'), { message: /unexpected files: checkpoint\/extra\.img/ });
});

test('verify walks the parent chain', async (t) => {
  const store = await newStore();
  await writeCheckpoint(store, 'ck-parent');
  await writeCheckpoint(store, 'ck-child', 'ck-parent');
  t.deepEqual(
    (await store.verify('ck-child')).map((m) => m.id),
    ['ck-child', 'ck-parent'],
  );
  await writeFile(path.join(store.dirOf('ck-parent'), 'spec.dump'), 'tampered');
  await t.throwsAsync(store.verify('ck-child'), { message: /ck-parent is damaged/ });
});

test('a parent cannot be deleted while a checkpoint builds on it', async (t) => {
  const store = await newStore();
  await writeCheckpoint(store, 'ck-p');
  await writeCheckpoint(store, 'ck-q', 'ck-p');
  await t.throwsAsync(store.delete('ck-p'), { message: /parent of ck-q/ });
  await store.delete('ck-q');
  await store.delete('ck-p');
  t.deepEqual(await store.list(), []);
});

test('init removes leftovers of interrupted writes', async (t) => {
  const store = await newStore();
  const pending = await store.begin('ck-e');
  await writeFile(path.join(pending.dir, 'half.img'), 'x');
  await store.init();
  t.deepEqual(await readdir(path.join(store.root, 'checkpoints')), []);
});

test('ids that could reach outside the store are refused', async (t) => {
  const store = await newStore();
  for (const id of ['../etc', 'a/b', '.hidden', 'UPPER', '']) {
    const err = t.throws(() => store.dirOf(id));
    t.is(isFerryError(err) ? err.code : undefined, 'bad_request');
  }
});

test('export then import into another store round-trips, with the parent link', async (t) => {
  const a = await newStore();
  const b = await newStore();
  await writeCheckpoint(a, 'ck-base');
  const { manifest } = await writeCheckpoint(a, 'ck-next', 'ck-base');
  await t.throwsAsync(b.importArchive(a.exportArchive('ck-next')), { message: /builds on ck-base, which is not on this node/ });
  await b.importArchive(a.exportArchive('ck-base'));
  const imported = await b.importArchive(a.exportArchive('ck-next'));
  t.deepEqual(imported, manifest);
  t.deepEqual(
    (await b.verify('ck-next')).map((m) => m.id),
    ['ck-next', 'ck-base'],
  );
});

function archive(entries: { name: string; type?: 'file' | 'symlink'; body?: string; linkname?: string }[]): Readable {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname ?? '' });
    else pack.entry({ name: e.name }, e.body ?? '');
  }
  pack.finalize();
  return Readable.from(pack);
}

test('import refuses entries that escape the checkpoint directory', async (t) => {
  const store = await newStore();
  await t.throwsAsync(store.importArchive(archive([{ name: '../../escape.txt', body: 'x' }])), { message: /outside the checkpoint/ });
  await t.throwsAsync(store.importArchive(archive([{ name: 'evil', type: 'symlink', linkname: '/etc' }])), { message: /never holds/ });
  t.deepEqual(await readdir(path.join(store.root, 'checkpoints')), []);
  t.deepEqual(await readdir(path.dirname(store.root)).then((names) => names.includes('escape.txt')), false);
});

// Both found by the REST fuzzer (e2e/rest-fuzz.test.ts): they were 500s.
test('import refuses names no file can have and manifests that are not a manifest, as bad requests', async (t) => {
  const store = await newStore();
  const refused = async (entries: Parameters<typeof archive>[0]) => {
    const err = await t.throwsAsync(store.importArchive(archive(entries)));
    return `${(err as FerryError).code}: ${err?.message}`;
  };
  t.regex(await refused([{ name: 'a'.repeat(300), body: 'x' }]), /^bad_request: .*too long, or a NUL byte/);
  t.regex(await refused([{ name: `checkpoint/${'b'.repeat(2000)}`, body: 'x' }]), /^bad_request: /);
  t.regex(await refused([{ name: 'manifest.json', body: 'not json' }]), /^bad_request: .*manifest.json is not valid JSON/);
  t.regex(await refused([{ name: 'manifest.json', body: 'null' }]), /^bad_request: manifest.id/);
  const noFiles = JSON.stringify({ version: 1, id: 'ck-x', files: [null] });
  t.regex(await refused([{ name: 'manifest.json', body: noFiles }]), /^checkpoint_corrupt: .*(does not describe|without path)/);
  t.deepEqual(await readdir(path.join(store.root, 'checkpoints')), [], 'nothing is left of them');
});

test('import refuses an archive whose files do not match its manifest', async (t) => {
  const a = await newStore();
  const b = await newStore();
  const { manifest } = await writeCheckpoint(a, 'ck-x');
  const forged = { ...manifest, files: manifest.files.map((f) => ({ ...f, sha256: '0'.repeat(64) })) };
  const stream = archive([
    { name: 'manifest.json', body: JSON.stringify(forged) },
    { name: 'spec.dump', body: '{"ociVersion":"1.0.2"}' },
    { name: 'checkpoint/pages-1.img', body: Buffer.alloc(8192, 7).toString() },
  ]);
  await t.throwsAsync(b.importArchive(stream), { message: /content differs/ });
  t.deepEqual(await b.list(), []);
});
