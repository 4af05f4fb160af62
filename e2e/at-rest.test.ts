/**
 * Checkpoints kept compressed and encrypted, with real CRIU and runc: what is on disk holds none of the
 * workload's memory in the clear, a restore decodes and resumes the count, and a node without the key (or
 * with another) refuses the restore by name and starts nothing.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { isFerryError } from '../agent/src/errors.js';
import { loadImageKey } from '../agent/src/store/encoding.js';
import { startTestAgent, type TestAgent } from './support/agent.js';
import { runcCount, runcRemove, runcState, startRuncCounter } from './support/runc.js';
import { expectCountResumed, waitFor } from './support/workload.js';

let scratch: string;
let keyed: TestAgent;
let keyless: TestAgent;
let otherKey: TestAgent;
const started: string[] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-at-rest-'));
  const keyFile = (name: string) => {
    const file = path.join(scratch, name);
    return writeFile(file, randomBytes(32), { mode: 0o600 }).then(() => file);
  };
  keyed = await startTestAgent(['runc'], { compression: 'zstd', imageKeyPath: await keyFile('key-a') });
  keyless = await startTestAgent(['runc']);
  otherKey = await startTestAgent(['runc'], { compression: 'gzip', imageKeyPath: await keyFile('key-b') });
});

test.after.always(async () => {
  for (const id of started) await runcRemove(id);
  await Promise.all([keyed?.stop(), keyless?.stop(), otherKey?.stop()]);
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Every stored file but the manifest (which names the container, as it must). */
async function contentFiles(dir: string): Promise<{ name: string; bytes: Buffer }[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  const files = entries.filter((e) => e.isFile() && e.name !== 'manifest.json');
  return Promise.all(files.map(async (e) => ({ name: e.name, bytes: await readFile(path.join(e.parentPath, e.name)) })));
}

const codeOf = (err: unknown) => (isFerryError(err) ? err.code : String(err));

test.serial('an encrypted, compressed checkpoint restores where the key is, and nowhere else', async (t) => {
  const id = `at-rest-${process.pid}`;
  started.push(id);
  await startRuncCounter(id, scratch);
  const before = await waitFor(
    () => runcCount(id),
    (n) => n >= 3,
    { what: `${id} to count` },
  );
  const m = await keyed.client.checkpoint({ runtime: 'runc', container: id });
  const key = await loadImageKey(path.join(scratch, 'key-a'));
  t.is(m.encoding?.encryption?.keyId, key.id);
  t.is(m.encoding?.compression, 'zstd');
  const pages = m.files.filter((f) => /pages-\d+\.img\.fz$/.test(f.path));
  t.true(pages.length > 0, 'memory is stored encoded');
  t.false(
    m.files.some((f) => /pages-\d+\.img$/.test(f.path)),
    'no memory image is stored plain',
  );
  // The counter's memory holds its environment: the container id is in it, and must not be readable at rest.
  const stored = await contentFiles(path.join(keyed.stateDir, 'images', 'checkpoints', m.id));
  t.deepEqual(
    stored.filter((f) => f.bytes.includes(id)).map((f) => f.name),
    [],
    "the container's memory is nowhere in the clear",
  );

  // Elsewhere, without the key or with another: refused by name, nothing started.
  for (const [agent, pattern] of [
    [keyless, /this agent has no image key/],
    [otherKey, /this agent's key is k-/],
  ] as const) {
    const copy = await agent.client.importArchive(await keyed.client.exportArchive(m.id));
    const err = await t.throwsAsync(agent.client.restore(copy.id, { name: `${id}-elsewhere` }));
    t.is(codeOf(err), 'key_unavailable');
    t.regex(err?.message ?? '', pattern);
    t.is(await runcState(`${id}-elsewhere`), undefined, 'nothing was started');
    await agent.client.deleteCheckpoint(copy.id);
  }

  const restored = await keyed.client.restore(m.id);
  t.is(restored.container.state, 'running');
  await expectCountResumed(() => runcCount(id), before);
  t.deepEqual(
    (await readdir(path.join(keyed.stateDir, 'images', 'checkpoints'))).filter((n) => n.startsWith('.')),
    [],
    'the decoded copy is gone after the restore',
  );
});
