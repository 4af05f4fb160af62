/**
 * The agent on real runc and real CRIU, through its HTTP API: checkpoint and restore a counting container,
 * leave-running checkpoints, and the refusals (corrupt image, bad token, bad names, unknown containers,
 * a CRIU failure that must leave the container running).
 */
import test from 'ava';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { AgentClient } from '../agent/src/client.js';
import { isFerryError } from '../agent/src/errors.js';
import { startTestAgent, type TestAgent } from './support/agent.js';
import { runcCount, runcRemove, runcState, startRuncCounter } from './support/runc.js';
import { expectCountResumed, waitFor } from './support/workload.js';

let agent: TestAgent;
let scratch: string;
const started: string[] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-e2e-runc-'));
  agent = await startTestAgent(['runc']);
});

test.after.always(async () => {
  for (const id of started) await runcRemove(id);
  await agent?.stop();
  await rm(scratch, { recursive: true, force: true });
});

async function counter(name: string): Promise<string> {
  const id = `${name}-${process.pid}`;
  started.push(id);
  await startRuncCounter(id, scratch);
  await waitFor(
    () => runcCount(id),
    (n) => n >= 3,
    { what: `${id} to count` },
  );
  return id;
}

const codeOf = (err: unknown) => (isFerryError(err) ? err.code : String(err));
const statusOf = (err: unknown) => (isFerryError(err) ? err.details?.status : undefined);

test.serial('checkpoint stops the container; restore resumes the count from memory', async (t) => {
  const id = await counter('ck-stop');
  const before = await runcCount(id);
  const m = await agent.client.checkpoint({ runtime: 'runc', container: id });
  t.is(m.kind, 'full');
  t.false(m.leaveRunning);
  t.true((m.stats?.frozenTimeMs ?? 0) > 0, 'CRIU frozen time is reported');
  t.true((m.stats?.pagesWritten ?? 0) > 0, 'CRIU pages written are reported');
  // CRIU's own cgroup freeze polls every 100 ms; the agent freezes first and CRIU starts at once.
  t.true((m.stats?.freezingTimeMs ?? 100) < 50, `CRIU found the container frozen (${m.stats?.freezingTimeMs} ms)`);
  t.true(m.files.some((f) => f.path === 'checkpoint/inventory.img'));
  t.true(m.files.some((f) => f.path === 'rootfs-diff.tar'));
  t.is(
    (await agent.client.containers('runc')).find((c) => c.id === id),
    undefined,
    'the container is gone after a stopping checkpoint',
  );

  const r = await agent.client.restore(m.id);
  started.push(r.container.name);
  t.is(r.container.name, id, 'restores under the original name when it is free');
  t.is(r.container.state, 'running');
  t.is(r.container.bundle, path.join(scratch, id), 'the untouched original bundle is restored in place, as runc does');
  t.true((r.stats?.restoreTimeMs ?? 0) > 0, 'CRIU restore time is reported');
  const { next } = await expectCountResumed(() => runcCount(id), before);
  t.true(next > before);
});

test.serial('leave-running checkpoint, later restored under another name; both keep counting', async (t) => {
  const id = await counter('ck-leave');
  const m = await agent.client.checkpoint({ runtime: 'runc', container: id, leaveRunning: true });
  const atCheckpoint = await runcCount(id);
  await waitFor(
    () => runcCount(id),
    (n) => n > atCheckpoint + 5,
    { what: 'the original to keep counting' },
  );

  const r = await agent.client.restore(m.id, { name: `${id}-copy` });
  started.push(r.container.name);
  t.is(r.container.name, `${id}-copy`);
  t.not(r.container.bundle, path.join(scratch, id), 'the original still uses its bundle: the copy gets its own');
  // The copy resumes from the checkpoint's memory: past its start, behind the original that kept going.
  const copy = await expectCountResumed(() => runcCount(`${id}-copy`), 0);
  // The copy may tick once before it is first read; a copy that restarted would be far below.
  t.true(copy.first <= atCheckpoint + 1, `copy starts from the checkpoint (${copy.first} <= ${atCheckpoint} + 1)`);
  t.true(copy.first > 1, 'copy did not restart from 1');
  const original = await runcCount(id);
  t.true(original > atCheckpoint, 'original still counts');
});

test.serial("a bundle touched after the checkpoint is not reused: the restore unpacks the checkpoint's rootfs", async (t) => {
  const id = await counter('ck-touched');
  const before = await runcCount(id);
  const m = await agent.client.checkpoint({ runtime: 'runc', container: id });
  const bundle = path.join(scratch, id);
  await writeFile(path.join(bundle, 'rootfs', 'tmp', 'count'), '1\n');
  const r = await agent.client.restore(m.id);
  started.push(r.container.name);
  t.not(r.container.bundle, bundle);
  t.is(path.dirname(r.container.bundle ?? ''), path.join(agent.stateDir, 'bundles'));
  // The count file comes from the checkpoint's rootfs and the process's memory, not from the edit.
  const { next } = await expectCountResumed(() => runcCount(id), before);
  t.true(next > before);
});

test.serial(
  'lazyMemory: where CRIU has lazy pages the copy resumes first and its memory follows; where not, refused naming the field',
  async (t) => {
    const id = await counter('ck-lazy-mem');
    const before = await runcCount(id);
    const m = await agent.client.checkpoint({ runtime: 'runc', container: id });
    const caps = await agent.client.node();
    if (!caps.criu.lazyPages) {
      // This machine's kernel (HOST-NOTES): CRIU's lazy pages do not work, so nothing is tried.
      const err = await t.throwsAsync(agent.client.restore(m.id, { lazyMemory: true }));
      t.is(codeOf(err), 'unsupported');
      t.is(isFerryError(err) ? err.details?.field : undefined, 'lazyMemory');
      t.is(await runcState(id), undefined, 'nothing was restored');
      await agent.client.restore(m.id);
      await expectCountResumed(() => runcCount(id), before);
      return;
    }
    await agent.client.restore(m.id, { lazyMemory: true });
    await expectCountResumed(() => runcCount(id), before);
    const load = await waitFor(
      () => agent.client.memoryLoad(m.id, 5_000),
      (s) => s.state !== 'loading',
      { what: 'the memory load to end' },
    );
    t.is(load.state, 'loaded', load.error);
    await agent.client.deleteCheckpoint(m.id);
  },
);

test.serial('a hold released with kill: the frozen container is killed, never thawed to run on', async (t) => {
  const id = await counter('hold-kill');
  const hold = await agent.client.hold({ containers: [{ runtime: 'runc', container: id }], ttlMs: 60_000 });
  t.is(await runcState(id), 'paused');
  const released = await agent.client.releaseHold(hold.id, { kill: true });
  t.is(released.id, hold.id);
  await waitFor(
    () => runcState(id),
    (s) => s === 'stopped' || s === undefined,
    { what: `${id} to be dead after its hold was released with kill` },
  );
  const again = await t.throwsAsync(agent.client.releaseHold(hold.id));
  t.regex(again?.message ?? '', /no hold/);
});

test.serial('a flipped byte in an image: restore refuses with checkpoint_corrupt and nothing changes', async (t) => {
  const id = await counter('ck-corrupt');
  const m = await agent.client.checkpoint({ runtime: 'runc', container: id, leaveRunning: true });
  const pages = m.files.find((f) => f.path.startsWith('checkpoint/pages-'));
  t.truthy(pages);
  const file = path.join(agent.stateDir, 'images', 'checkpoints', m.id, pages?.path ?? '');
  const buf = await readFile(file);
  buf[Math.floor(buf.length / 2)] = (buf[Math.floor(buf.length / 2)] ?? 0) ^ 0x01;
  await writeFile(file, buf);

  // Only this test's containers: podman's share runc's default root, and other test files run meanwhile.
  const ours = async () =>
    (await agent.client.containers('runc'))
      .map((c) => c.id)
      .filter((c) => c.startsWith(id))
      .sort();
  const containersBefore = await ours();
  const err = await t.throwsAsync(agent.client.restore(m.id, { name: `${id}-bad` }));
  t.is(codeOf(err), 'checkpoint_corrupt');
  t.is(statusOf(err), 422);
  t.regex(err?.message ?? '', /pages-\d+\.img/);
  t.truthy(isFerryError(err) && err.hint);
  t.deepEqual(await ours(), containersBefore, 'no container was created or removed');
  t.deepEqual(containersBefore, [id]);
  t.is((await agent.client.getCheckpoint(m.id)).id, m.id, 'the checkpoint stays listed for inspection');
});

test.serial('a checkpoint deleted while it is still arriving is discarded when it lands; a later import keeps it', async (t) => {
  const id = await counter('ck-arriving');
  const m = await agent.client.checkpoint({ runtime: 'runc', container: id, leaveRunning: true });
  const chunks: Buffer[] = [];
  for await (const c of await agent.client.exportArchive(m.id)) chunks.push(c as Buffer);
  const archive = Buffer.concat(chunks);
  await agent.client.deleteCheckpoint(m.id);

  // Half the archive is on its way when a rollback deletes the checkpoint here (nothing to delete yet).
  const body = new PassThrough();
  const arriving = agent.client.importArchive(body);
  body.write(archive.subarray(0, archive.length / 2));
  // The agent has begun the import once its partial directory exists in the store.
  const checkpointsDir = path.join(agent.stateDir, 'images', 'checkpoints');
  await waitFor(
    () => readdir(checkpointsDir),
    (names) => names.some((n) => n.startsWith('.partial-import-')),
    { what: 'the import to begin' },
  );
  t.is(codeOf(await t.throwsAsync(agent.client.deleteCheckpoint(m.id))), 'checkpoint_not_found');
  body.end(archive.subarray(archive.length / 2));
  const err = await t.throwsAsync(arriving);
  t.is(codeOf(err), 'conflict', err?.message);
  t.regex(err?.message ?? '', /deleted here while it was arriving/);
  t.false(
    (await agent.client.checkpoints()).some((c) => c.id === m.id),
    'the late copy did not land',
  );

  // An import begun after the deletion is a new one and is kept.
  const again = await agent.client.importArchive(Readable.from([archive]));
  t.is(again.id, m.id);
  await agent.client.deleteCheckpoint(m.id);
});

test.serial('a wrong or missing token is refused on every route but health', async (t) => {
  const wrong = new AgentClient(agent.url, 'not-the-token');
  for (const call of [
    () => wrong.containers(),
    () => wrong.checkpoints(),
    () => wrong.node(),
    () => wrong.checkpoint({ runtime: 'runc', container: 'x' }),
  ]) {
    const err = await t.throwsAsync(call());
    t.is(codeOf(err), 'unauthorized');
    t.is(statusOf(err), 401);
  }
  const res = await fetch(`${agent.url}/v1/checkpoints`);
  t.is(res.status, 401);
  t.is((await wrong.health()).ok, true);
});

test.serial('names with ../ and unknown containers are refused with field-naming errors', async (t) => {
  const bad = await t.throwsAsync(agent.client.checkpoint({ runtime: 'runc', container: '../../etc' }));
  t.is(codeOf(bad), 'bad_request');
  t.is(statusOf(bad), 400);
  t.is(isFerryError(bad) ? bad.details?.field : undefined, 'container');

  const badRestore = await t.throwsAsync(agent.client.restore('ck-x', { name: '../escape' }));
  t.is(codeOf(badRestore), 'bad_request');
  t.is(isFerryError(badRestore) ? badRestore.details?.field : undefined, 'name');

  const traversal = await fetch(`${agent.url}/v1/checkpoints/..%2F..%2Fetc`, { headers: { authorization: `Bearer ${agent.token}` } });
  t.is(traversal.status, 400);

  const missing = await t.throwsAsync(agent.client.checkpoint({ runtime: 'runc', container: 'no-such-container' }));
  t.is(codeOf(missing), 'container_not_found');
  t.is(statusOf(missing), 404);

  const unknownField = await t.throwsAsync(agent.client.checkpoint({ runtime: 'runc', container: 'x', leaveRunnig: true } as never));
  t.is(codeOf(unknownField), 'bad_request');
  t.regex(unknownField?.message ?? '', /leaveRunnig/);
});

test.serial('a CRIU failure mid-dump leaves the container running and returns CRIU log lines', async (t) => {
  // CRIU's own fault injection (FI_DUMP_PAGES = 3) fails the dump after the tasks were frozen and infected.
  const faulty = path.join(scratch, 'criu-faulty');
  await writeFile(faulty, '#!/bin/sh\nexport CRIU_FAULT=3\nexec criu "$@"\n');
  await chmod(faulty, 0o755);
  const faultyAgent = await startTestAgent(['runc'], { criu: faulty });
  try {
    const id = await counter('ck-fail');
    const err = await t.throwsAsync(faultyAgent.client.checkpoint({ runtime: 'runc', container: id }));
    t.is(codeOf(err), 'criu_failed');
    t.true(isFerryError(err) && (err.criuLog?.length ?? 0) > 0, 'CRIU log lines are returned');
    t.is(isFerryError(err) ? err.details?.containerState : undefined, 'running');
    const after = await runcCount(id);
    await waitFor(
      () => runcCount(id),
      (n) => n > after,
      { what: 'the container to keep counting after the failed dump' },
    );
    t.deepEqual(await faultyAgent.client.checkpoints(), [], 'no partial checkpoint is listed');
  } finally {
    await faultyAgent.stop();
  }
});
