/** Merging pre-copy rounds into one image set, on image sets built here byte by byte as CRIU writes them. */
import test from 'ava';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { MergedRounds, Unmergeable } from '../src/criu/merged-rounds.js';
import { decodePagemap, PE_LAZY, PE_PARENT, PE_PRESENT } from '../src/criu/pagemap.js';
import { ALL, HEAP, LIB, P, page, type Run, round, STACK, scratch } from './fixtures/criu-images.js';

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

test('a changed memory layout is refused, saying what changed', async (t) => {
  const s = await scratch(t);
  const r1 = await round(path.join(s, 'r1'), ALL, 1);
  const grown = await round(path.join(s, 'grown'), [[HEAP, 17, PE_PRESENT]], 2, { parent: '../../r1/checkpoint' });
  const merged = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work'));
  await t.throwsAsync(merged.apply(path.join(grown, 'checkpoint')), {
    instanceOf: Unmergeable,
    message: /page at 0x10010000 the first round did not/,
  });

  const shrunk = await round(
    path.join(s, 'shrunk'),
    [
      [HEAP, 16, PE_PARENT],
      [LIB, 4, PE_PARENT],
    ],
    3,
    { parent: '../../r1/checkpoint' },
  );
  const again = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work2'));
  await t.throwsAsync(again.finish(shrunk, path.join(s, 'out'), { lazy: false }), {
    instanceOf: Unmergeable,
    message: /memory layout changed/,
  });

  const other = await round(path.join(s, 'other'), ALL, 1, { pid: 9 });
  const third = await MergedRounds.start(path.join(r1, 'checkpoint'), path.join(s, 'work3'));
  await t.throwsAsync(third.apply(path.join(other, 'checkpoint')), { instanceOf: Unmergeable, message: /process 9 appeared/ });

  await t.throwsAsync(MergedRounds.start(path.join(shrunk, 'checkpoint'), path.join(s, 'work4')), {
    instanceOf: Unmergeable,
    message: /has a parent/,
  });
});
