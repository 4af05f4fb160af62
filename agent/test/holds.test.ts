import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HoldRegistry } from '../src/holds.js';

const dumped = { runtime: 'runc' as const, id: 'c1', name: 'counter' };

test('a container is on record while it is dumped, and off it after, whether the dump succeeds or fails', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-holds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'holds.json');
  const registry = new HoldRegistry(file);
  const during = await registry.whileDumping(dumped, () => readFile(file, 'utf8'));
  t.deepEqual(JSON.parse(during), [dumped]);
  await t.throwsAsync(readFile(file, 'utf8'), { code: 'ENOENT' });
  await t.throwsAsync(
    registry.whileDumping(dumped, () => Promise.reject(new Error('criu failed'))),
    { message: 'criu failed' },
  );
  await t.throwsAsync(readFile(file, 'utf8'), { code: 'ENOENT' });
});

test('an agent killed mid-dump finds the container on record when it starts again, and thaws it once', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ferry-holds-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'holds.json');
  // What a killed agent leaves: the record written before the dump, never removed.
  await new HoldRegistry(file).whileDumping(dumped, async () => writeFile(path.join(dir, 'left.json'), await readFile(file)));
  await writeFile(file, await readFile(path.join(dir, 'left.json')));
  const thawed: string[] = [];
  const restarted = new HoldRegistry(file);
  t.deepEqual(await restarted.recover(async (c) => void thawed.push(c.id)), [dumped]);
  t.deepEqual(thawed, ['c1']);
  t.deepEqual(await restarted.recover(async (c) => void thawed.push(c.id)), [], 'the record is gone once recovered');
});
