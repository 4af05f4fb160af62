/**
 * Incremental policy chains on real runc and CRIU. Where the kernel tracks dirty memory (the qemu lab,
 * e2e/lab), checkpoints build on the container's previous one, a full checkpoint every `fullEvery`, later
 * increments write fewer pages than the full one, and the newest (a chain) restores with its count; where
 * it does not (this host), every checkpoint is full and the policy's status says why. The agent keeps
 * checkpoints encrypted and compressed (--image-key, --compress zstd), so each increment is dumped on a
 * parent that CRIU can read only once it is decoded aside (store/plain-view.ts).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { runcCount, runcRemove, startCounting } from './support/runc.js';
import { scaled } from './support/time.js';
import { COUNTER_WITH_BALLAST_ARGV, expectCountResumed, waitFor } from './support/workload.js';

const FULL_EVERY = 4;
let cluster: TestCluster;
let scratch: string;
const id = `pol-inc-${process.pid}`;
const copy = `${id}-r`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-policy-inc-'));
  const key = path.join(scratch, 'image.key');
  await writeFile(key, randomBytes(32), { mode: 0o600 });
  cluster = await startTestCluster(`i${process.pid % 100000}`, ['a'], {
    runtimes: ['runc'],
    subnet: `10.86.${process.pid % 250}.0/24`,
    agentArgs: () => ['--image-key', key, '--compress', 'zstd'],
  });
});

test.after.always(async () => {
  const root = cluster?.node('a').runcRoot;
  await runcRemove(id, root);
  await runcRemove(copy, root);
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

test.serial('incremental: chains where memory is tracked, full checkpoints with the reason where not', async (t) => {
  const root = cluster.node('a').runcRoot;
  await startCounting(id, scratch, root, COUNTER_WITH_BALLAST_ARGV);
  const tracking = (await cluster.node('a').agent.node()).criu.memDirtyTrack;
  await cluster.client().applyPolicy({
    metadata: { name: 'inc' },
    spec: {
      selector: { names: [id], runtime: 'runc' },
      schedule: { every: '2s' },
      incremental: { fullEvery: FULL_EVERY },
      retention: { keepLast: FULL_EVERY + 2 },
    },
  });
  // The runs' errors ride along, so a timeout says why checkpoints were missing.
  const { kept, errors } = await waitFor(
    async () => ({
      kept: (await cluster.client().policyCheckpoints('inc')).filter((c) => c.state === 'complete' && !c.memoryOnly),
      errors: (await cluster.client().policyRuns('inc'))
        .flatMap((r) => (r.error ? [[r.error.message, ...(r.error.criuLog ?? [])].join('\n')] : []))
        .slice(0, 2),
    }),
    (v) => v.kept.length >= FULL_EVERY + 1 || v.errors.length >= 2,
    { timeoutMs: scaled(90_000), everyMs: 250, what: `${FULL_EVERY + 1} checkpoints` },
  );
  await cluster.client().applyPolicy({
    metadata: { name: 'inc' },
    spec: { selector: { names: [id], runtime: 'runc' }, schedule: { every: '2s' }, incremental: { fullEvery: FULL_EVERY }, suspend: true },
  });
  t.deepEqual(errors, [], 'no run failed');
  const status = (await cluster.client().policy('inc')).status;
  if (!tracking) {
    t.true(kept.every((c) => !c.parent));
    t.regex(status.incremental, /full checkpoints: node a's kernel does not track dirty memory/);
    return;
  }
  const bases = (await cluster.client().policyCheckpoints('inc')).filter((c) => c.memoryOnly);
  const [first, second, third, fourth, fifth] = kept;
  // A chain starts on a memory-only base (a pre-dump: CRIU builds only on images taken with memory tracking).
  t.true(
    bases.some((b) => b.id === first?.parent),
    'the chain head builds on its base',
  );
  t.is(second?.parent, first?.id);
  t.is(third?.parent, second?.id);
  t.is(fourth?.parent, third?.id);
  t.true(
    bases.some((b) => b.id === fifth?.parent),
    `a new chain every ${FULL_EVERY}`,
  );
  const base = bases.find((b) => b.id === first?.parent);
  // After the base, each checkpoint writes only what changed: a fraction of the base's pages.
  t.true(
    (third?.pagesWritten ?? Infinity) < (base?.pagesWritten ?? 0),
    `pages: base ${base?.pagesWritten}, then ${kept.map((c) => c.pagesWritten).join(', ')}`,
  );
  t.is(status.checkpoints, kept.length, 'bases are not counted as checkpoints');
  const stored = await cluster.node('a').agent.checkpoints();
  t.true(
    stored.filter((m) => m.parent).every((m) => m.encoding?.encryption && m.files.some((f) => f.path.endsWith('pages-1.img.fz'))),
    'increments are kept encrypted, and were dumped on encrypted parents',
  );
  t.regex(status.incremental, /chains of up to 4/);

  // A chain restores: the newest with a parent, under a new name, from memory.
  const chained = kept.filter((c) => c.parent).at(-1);
  const before = await runcCount(id, root);
  await cluster.node('a').agent.restore(chained?.id as string, { name: copy });
  const resumed = await expectCountResumed(() => runcCount(copy, root), 3);
  t.true(resumed.next > 3 && resumed.next <= before + 1000, `restored count ${resumed.next}`);
});
