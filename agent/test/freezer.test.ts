/**
 * Finding a container's freezer in /proc/<pid>/cgroup on either cgroup version, against a directory laid
 * out as the kernel lays out /sys/fs/cgroup. The real freeze is exercised by the podman conformance test.
 */
import test from 'ava';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freezerFromProcCgroup } from '../src/runtimes/freezer.js';

const V1 = [
  '12:pids:/libpod_parent/libpod-abc',
  '6:freezer:/libpod_parent/libpod-abc',
  '1:name=systemd:/libpod_parent/libpod-abc',
  '',
].join('\n');
const V2 = '0::/machine.slice/libpod-abc.scope/container\n';

async function fakeRoot(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'ferry-cgroup-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  return root;
}

test('cgroup v1: the freezer hierarchy, FROZEN and THAWED in freezer.state', async (t) => {
  const root = await fakeRoot(t);
  const dir = path.join(root, 'freezer', 'libpod_parent', 'libpod-abc');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'freezer.state'), 'THAWED\n');
  const freezer = freezerFromProcCgroup(V1, root);
  if (!freezer) return t.fail('no freezer found');
  t.false(await freezer.isFrozen());
  await freezer.freeze();
  t.is(await readFile(path.join(dir, 'freezer.state'), 'utf8'), 'FROZEN');
  t.true(await freezer.isFrozen());
  await freezer.thaw();
  t.is(await readFile(path.join(dir, 'freezer.state'), 'utf8'), 'THAWED');
});

test('cgroup v2: cgroup.freeze to ask, cgroup.events to know it is done', async (t) => {
  const root = await fakeRoot(t);
  const dir = path.join(root, 'machine.slice', 'libpod-abc.scope', 'container');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'cgroup.events'), 'populated 1\nfrozen 0\n');
  const freezer = freezerFromProcCgroup(V2, root);
  if (!freezer) return t.fail('no freezer found');
  await freezer.freeze();
  t.is(await readFile(path.join(dir, 'cgroup.freeze'), 'utf8'), '1');
  t.false(await freezer.isFrozen(), 'asked is not done: the kernel reports frozen in cgroup.events');
  await writeFile(path.join(dir, 'cgroup.events'), 'populated 1\nfrozen 1\n');
  t.true(await freezer.isFrozen());
  await freezer.thaw();
  t.is(await readFile(path.join(dir, 'cgroup.freeze'), 'utf8'), '0');
});

test('a v1 host without the freezer controller has none to offer', (t) => {
  t.is(freezerFromProcCgroup('12:pids:/a\n1:name=systemd:/a\n'), undefined);
});
