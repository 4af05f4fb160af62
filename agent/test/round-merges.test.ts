/** Which rounds the agent merges as they arrive, and what a restore of the final dump finds. */
import test, { type ExecutionContext } from 'ava';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { MergedRounds } from '../src/criu/merged-rounds.js';
import { PE_PARENT } from '../src/criu/pagemap.js';
import { RoundMerges } from '../src/round-merges.js';
import type { Manifest } from '../src/store/manifest.js';
import { ALL, HEAP, ON_PARENT, round, scratch } from './fixtures/criu-images.js';

const manifest = (id: string, m: Partial<Manifest> = {}): Manifest =>
  ({ id, kind: 'pre-dump', transient: true, container: { id: 'c', name: 'c', runtime: 'runc' }, ...m }) as Manifest;

/** A registry working in a scratch directory whose round r1 (every page, no parent) is written already. */
async function withFirstRound(t: ExecutionContext) {
  const s = await scratch(t);
  const dirOf = (id: string) => path.join(s, id);
  await round(dirOf('r1'), ALL, 1);
  return { s, merges: new RoundMerges(path.join(s, 'merging')), dirOf };
}

test('a chain of rounds merges as it arrives; the final dump takes the merge of its parent, once', async (t) => {
  const { s, merges, dirOf } = await withFirstRound(t);
  await round(dirOf('r2'), ON_PARENT, 2, { parent: '../../r1/checkpoint' });
  merges.arrived(manifest('r1'), dirOf);
  merges.arrived(manifest('r2', { parent: 'r1' }), dirOf);
  t.is(await merges.take('r1'), undefined, 'r1 is no longer the tip');
  const merged = await merges.take('r2');
  t.true(merged instanceof MergedRounds);
  t.is(await merges.take('r2'), undefined, 'taken once');
  await (merged as MergedRounds).dispose();
  t.deepEqual(await readdir(path.join(s, 'merging')), []);
});

test('not merged: other runtimes, checkpoints kept for good, full dumps, and rounds on a chain never merged', async (t) => {
  const { merges, dirOf } = await withFirstRound(t);
  merges.arrived(manifest('r1', { container: { id: 'c', name: 'c', runtime: 'podman' } }), dirOf);
  merges.arrived(manifest('r1', { transient: false }), dirOf);
  merges.arrived(manifest('r1', { kind: 'full' }), dirOf);
  merges.arrived(manifest('r9', { parent: 'r8' }), dirOf);
  for (const id of ['r1', 'r9']) t.is(await merges.take(id), undefined);
});

test('a round that cannot be merged leaves the reason for the restore, and the working copy goes', async (t) => {
  const { s, merges, dirOf } = await withFirstRound(t);
  await round(dirOf('r2'), [[HEAP - 4096n, 1, PE_PARENT], ...ON_PARENT], 2, { parent: '../../r1/checkpoint' });
  merges.arrived(manifest('r1'), dirOf);
  merges.arrived(manifest('r2', { parent: 'r1' }), dirOf);
  t.regex(String(await merges.take('r2')), /^round r2 could not be merged: process 7 has a page at 0xffff000 that no earlier round held/);
  t.deepEqual(await readdir(path.join(s, 'merging')), []);
});

test('deleting the tip disposes of its merge', async (t) => {
  const { s, merges, dirOf } = await withFirstRound(t);
  merges.arrived(manifest('r1'), dirOf);
  await merges.forget('r1');
  t.deepEqual(await readdir(path.join(s, 'merging')), []);
  t.is(await merges.take('r1'), undefined);
});
