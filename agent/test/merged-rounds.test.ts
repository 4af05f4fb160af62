/** Merging pre-copy rounds into one image set, on image sets built here byte by byte as CRIU writes them. */
import test from 'ava';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { MergedRounds, Unmergeable } from '../src/criu/merged-rounds.js';
import { decodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT } from '../src/criu/pagemap.js';
import { ALL, HEAP, LIB, ON_PARENT, P, page, type Run, round, STACK, scratch } from './fixtures/criu-images.js';

test('rounds and the final dump merge into one set without parents, each page at its latest version', async (t) => {
  const s = await scratch(t);
  const r1 = await round(path.join(s, 'r1'), ALL, 1);
  const r2 = await round(
    path.join(s, 'r2'),
    [
      [HEAP, 4, PE_PARENT],
      [HEAP + 4n * P, 2, PE_PRESENT],
      [HEAP + 6n * P, 10, PE_PARENT],
      [LIB, 4, PE_PARENT],
      [STACK, 8, PE_PARENT],
    ],
    2,
    { parent: '../../r1/checkpoint' },
  );
  const final = await round(
    path.join(s, 'final'),
    [
      [HEAP, 5, PE_PARENT],
      [HEAP + 5n * P, 1, PE_PRESENT | PE_LAZY],
      [HEAP + 6n * P, 10, PE_PARENT],
      [LIB, 4, PE_PARENT],
      [STACK, 7, PE_PARENT],
      [STACK + 7n * P, 1, PE_PRESENT],
    ],
    3,
    { parent: '../../r2/checkpoint' },
  );

  const merged = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work'));
  await merged.apply(path.join(r2, 'checkpoint'));
  const out = path.join(s, 'out');
  t.deepEqual(await merged.finish(final, out, { lazy: false }), { pages: 28, lazyPages: 0 });

  const images = path.join(out, 'checkpoint');
  t.false((await readdir(images)).includes('parent'), 'restores without the rounds');
  t.is(await readFile(path.join(out, 'spec.dump'), 'utf8'), '{"round":3}', "the final dump's other files");
  t.is(
    (await stat(path.join(images, 'core-7.img'))).ino,
    (await stat(path.join(final, 'checkpoint', 'core-7.img'))).ino,
    'linked, not copied',
  );
  const pagemap = decodePagemap(await readFile(path.join(images, 'pagemap-7.img')));
  t.deepEqual(
    pagemap.entries,
    ALL.map(([vaddr, nrPages]) => ({ vaddr, nrPages, flags: PE_PRESENT })),
  );
  const data = await readFile(path.join(images, 'pages-1.img'));
  const expected: Buffer[] = [];
  for (const [vaddr, n] of ALL) {
    for (let i = 0n; i < BigInt(n); i++) {
      const at = vaddr + i * P;
      const version = at === HEAP + 5n * P || at === STACK + 7n * P ? 3 : at >= HEAP + 4n * P && at < HEAP + 6n * P ? 2 : 1;
      expected.push(page(at, version));
    }
  }
  t.true(data.equals(Buffer.concat(expected)), 'every page at the version of the last image set that held it');
  t.deepEqual(await readdir(path.join(s, 'work')).catch(() => 'gone'), 'gone', 'the working copy is used up');
  t.deepEqual(
    (await readFile(path.join(r1, 'checkpoint', 'pages-1.img'))).subarray(0, 1),
    page(HEAP, 1).subarray(0, 1),
    'the first round is left as it was',
  );
});

test("lazy: pages load lazily where CRIU would load them lazily, never the stack pointer's pages nor file mappings", async (t) => {
  const s = await scratch(t);
  const r1 = await round(path.join(s, 'r1'), ALL, 1);
  const final = await round(
    path.join(s, 'final'),
    ALL.map(([v, n]) => [v, n, PE_PARENT] as Run),
    2,
    { parent: '../../r1/checkpoint' },
  );
  const merged = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work'));
  t.deepEqual(await merged.finish(final, path.join(s, 'out'), { lazy: true }), { pages: 28, lazyPages: 16 + 5 });
  const pagemap = decodePagemap(await readFile(path.join(s, 'out', 'checkpoint', 'pagemap-7.img')));
  t.deepEqual(pagemap.entries, [
    { vaddr: HEAP, nrPages: 16, flags: PE_PRESENT | PE_LAZY },
    { vaddr: LIB, nrPages: 4, flags: PE_PRESENT },
    { vaddr: STACK, nrPages: 3, flags: PE_PRESENT | PE_LAZY },
    { vaddr: STACK + 3n * P, nrPages: 3, flags: PE_PRESENT },
    { vaddr: STACK + 6n * P, nrPages: 2, flags: PE_PRESENT | PE_LAZY },
  ]);
});

test('a round with another layout becomes the layout: a heap grew, a stack went, the final dump on it restores', async (t) => {
  const s = await scratch(t);
  const r1 = await round(path.join(s, 'r1'), ALL, 1);
  // The heap grew by a page, the file mapping is unchanged, the stack is gone.
  const r2Runs: Run[] = [
    [HEAP, 15, PE_PARENT],
    [HEAP + 15n * P, 2, PE_PRESENT],
    [LIB, 4, PE_PARENT],
  ];
  const r2 = await round(path.join(s, 'r2'), r2Runs, 2, { parent: '../../r1/checkpoint' });
  const final = await round(
    path.join(s, 'final'),
    [
      [HEAP, 17, PE_PARENT],
      [LIB, 1, PE_PRESENT],
      [LIB + P, 3, PE_PARENT],
    ],
    3,
    { parent: '../../r2/checkpoint' },
  );
  const merged = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work'));
  await merged.apply(path.join(r2, 'checkpoint'));
  t.deepEqual(await merged.finish(final, path.join(s, 'out'), { lazy: false }), { pages: 21, lazyPages: 0 });
  const images = path.join(s, 'out', 'checkpoint');
  t.deepEqual(decodePagemap(await readFile(path.join(images, 'pagemap-7.img'))).entries, [
    { vaddr: HEAP, nrPages: 17, flags: PE_PRESENT },
    { vaddr: LIB, nrPages: 4, flags: PE_PRESENT },
  ]);
  const expected: Buffer[] = [];
  for (let i = 0n; i < 17n; i++) expected.push(page(HEAP + i * P, i >= 15n ? 2 : 1));
  expected.push(page(LIB, 3));
  for (let i = 1n; i < 4n; i++) expected.push(page(LIB + i * P, 1));
  t.true((await readFile(path.join(images, 'pages-1.img'))).equals(Buffer.concat(expected)));
});

test('a process that started after the first round is merged from its own pages; one that ended is dropped', async (t) => {
  const s = await scratch(t);
  const r1 = await round(path.join(s, 'r1'), ALL, 1);
  const merged = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work'));
  await merged.apply(path.join(await round(path.join(s, 'r2'), ALL, 2, { pid: 9 }), 'checkpoint'));
  const final = await round(path.join(s, 'final'), ON_PARENT, 3, { pid: 9, parent: '../../r2/checkpoint' });
  t.deepEqual(await merged.finish(final, path.join(s, 'out'), { lazy: false }), { pages: 28, lazyPages: 0 });
  t.deepEqual(
    (await readdir(path.join(s, 'out', 'checkpoint'))).filter((n) => n.startsWith('pagemap')),
    ['pagemap-9.img'],
  );
});

test('what cannot be merged is refused, saying why', async (t) => {
  const s = await scratch(t);
  const r1 = await round(path.join(s, 'r1'), ALL, 1);
  const unheld = await round(path.join(s, 'unheld'), [[HEAP - P, 1, PE_PARENT], ...ON_PARENT], 2, { parent: '../../r1/checkpoint' });
  const merged = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work'));
  await t.throwsAsync(merged.apply(path.join(unheld, 'checkpoint')), {
    instanceOf: Unmergeable,
    message: /page at 0xffff000 that no earlier round held/,
  });
  await t.throwsAsync(MergedRounds.start(path.join(unheld, 'checkpoint'), path.join(s, 'work2')), {
    instanceOf: Unmergeable,
    message: /has a parent/,
  });
});
