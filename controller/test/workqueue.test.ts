import test from 'ava';
import { WorkQueue } from '../src/kube/workqueue.js';

/** A promise with its resolve, to hold a reconcile where the test wants it. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => {
    open = r;
  });
  return { open, opened };
}

test('a key is never reconciled twice at once; adds while it runs collapse into one more run', async (t) => {
  const hold = gate();
  const started = gate();
  let running = 0;
  let maxRunning = 0;
  const runs: string[] = [];
  const q = new WorkQueue(async (key) => {
    running += 1;
    maxRunning = Math.max(maxRunning, running);
    runs.push(key);
    if (runs.length === 1) {
      started.open();
      await hold.opened;
    }
    running -= 1;
  });
  q.add('ns/a');
  await started.opened;
  q.add('ns/a');
  q.add('ns/a');
  q.add('ns/a');
  hold.open();
  await q.idle();
  t.deepEqual(runs, ['ns/a', 'ns/a']);
  t.is(maxRunning, 1);
});

test('different keys run side by side, up to the concurrency', async (t) => {
  const hold = gate();
  let running = 0;
  let maxRunning = 0;
  const all = gate();
  const q = new WorkQueue(
    async () => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      if (running === 2) all.open();
      await hold.opened;
      running -= 1;
    },
    { concurrency: 2 },
  );
  for (const k of ['a', 'b', 'c']) q.add(k);
  await all.opened;
  hold.open();
  await q.idle();
  t.is(maxRunning, 2);
});

test('a failing key is retried with doubling delays until it succeeds, then its count resets', async (t) => {
  const delays: number[] = [];
  let attempts = 0;
  const q = new WorkQueue(
    async () => {
      attempts += 1;
      if (attempts <= 3) throw new Error(`attempt ${attempts}`);
    },
    { baseDelayMs: 5, onError: (_k, _e, ms) => delays.push(ms) },
  );
  q.add('k');
  await q.idle();
  t.is(attempts, 4);
  t.deepEqual(delays, [5, 10, 20]);
  t.is(q.failuresOf('k'), 0);
});

test('a fresh add does not wait out the backoff of an earlier failure', async (t) => {
  let attempts = 0;
  const second = gate();
  const failed = gate();
  const q = new WorkQueue(
    async () => {
      attempts += 1;
      if (attempts === 1) throw new Error('first');
      second.open();
    },
    { baseDelayMs: 60_000, onError: () => failed.open() },
  );
  q.add('k');
  // The failure schedules a retry a minute out; the add below must not wait for it.
  await failed.opened;
  q.add('k');
  await second.opened;
  t.is(attempts, 2);
  await q.stop();
});

test('stop drops pending retries and resolves once running work ends', async (t) => {
  let attempts = 0;
  const failed = gate();
  const q = new WorkQueue(
    async () => {
      attempts += 1;
      throw new Error('always');
    },
    { baseDelayMs: 60_000, onError: () => failed.open() },
  );
  q.add('k');
  await failed.opened;
  await q.stop();
  q.add('k');
  await q.idle();
  t.is(attempts, 1);
});
