/** The pre-copy stopping rule: adapts to measured bandwidth and dirtying, never loops. */
import test from 'ava';
import { decideAfterRound, estimateDowntimeMs, PAGE_SIZE, type RoundFigures } from '../src/migration/precopy.js';

const limits = { maxDowntimeMs: 300, maxRounds: 8, maxBytesFactor: 3 };
const MiB = 1024 * 1024;

function round(i: number, pagesWritten: number, bandwidthBytesPerSecond = 100 * MiB, frozenTimeMs = 50): RoundFigures {
  const bytesSent = pagesWritten * PAGE_SIZE;
  const r = { frozenTimeMs, pagesWritten, bandwidthBytesPerSecond };
  return {
    round: i,
    checkpointId: `r${i}`,
    ...r,
    dumpMs: 100,
    bytesSent,
    transferMs: (bytesSent / bandwidthBytesPerSecond) * 1000,
    estimatedDowntimeMs: estimateDowntimeMs(r),
  };
}

test('the estimate is frozen time + delta over bandwidth + restore', (t) => {
  // 25600 pages = 100 MiB at 100 MiB/s = 1000 ms, + 50 frozen + 200 restore prior.
  t.is(estimateDowntimeMs({ frozenTimeMs: 50, pagesWritten: 25_600, bandwidthBytesPerSecond: 100 * MiB }), 1250);
  t.is(estimateDowntimeMs({ frozenTimeMs: 50, pagesWritten: 25_600, bandwidthBytesPerSecond: 100 * MiB }, 100), 1150);
  t.is(estimateDowntimeMs({ frozenTimeMs: 10, pagesWritten: 1, bandwidthBytesPerSecond: 0 }), Number.POSITIVE_INFINITY);
});

test('another round while the delta shrinks and the estimate is above target', (t) => {
  // 256 MiB first, then 16 MiB dirtied: estimate 50 + 160 + 200 = 410 > 300, and shrinking.
  t.deepEqual(decideAfterRound([round(1, 65_536), round(2, 4_096)], limits), { action: 'another-round' });
});

test('final dump once the estimate meets the target', (t) => {
  // 1 MiB delta: 50 + 10 + 200 = 260 <= 300.
  const d = decideAfterRound([round(1, 65_536), round(2, 4_096), round(3, 256)], limits);
  t.is(d.action, 'final-dump');
  t.regex(d.action === 'final-dump' ? d.reason : '', /meets the target/);
});

test('a workload that dirties as fast as the link copies: stop instead of looping', (t) => {
  // The delta stays at ~128 MiB: no round helps, so freeze now (the fallback is graceful, not a loop).
  const d = decideAfterRound([round(1, 65_536), round(2, 32_768), round(3, 31_000)], limits);
  t.is(d.action, 'final-dump');
  t.regex(d.action === 'final-dump' ? d.reason : '', /stopped shrinking/);
});

test('rounds that never catch up (the last delta still most of memory): fall back to stop-and-copy without them', (t) => {
  // The lab's 1 GiB workload dirtying faster than an emulated round copies: 262161 then 262151 pages.
  const d = decideAfterRound([round(1, 262_161), round(2, 262_151)], limits);
  t.is(d.action, 'final-dump');
  t.true(d.action === 'final-dump' && d.withoutRounds === true);
  t.regex(d.action === 'final-dump' ? d.reason : '', /falling back to stop-and-copy/);
  // Half of memory caught up with is worth keeping: the final dump builds on the rounds.
  const partly = decideAfterRound([round(1, 65_536), round(2, 20_000), round(3, 19_500)], limits);
  t.false(partly.action === 'final-dump' && partly.withoutRounds === true);
});

test('round and byte budgets end the rounds', (t) => {
  const slowlyShrinking = Array.from({ length: 8 }, (_, i) => round(i + 1, Math.round(65_536 * 0.8 ** i)));
  const byRounds = decideAfterRound(slowlyShrinking, limits);
  t.regex(byRounds.action === 'final-dump' ? byRounds.reason : '', /round budget/);
  const bytes = decideAfterRound(slowlyShrinking.slice(0, 5), { ...limits, maxBytesFactor: 2 });
  t.regex(bytes.action === 'final-dump' ? bytes.reason : '', /byte budget/);
});

test('a slow link makes the same delta too expensive: the decision follows the measured bandwidth', (t) => {
  const fast = decideAfterRound([round(1, 65_536, 1000 * MiB), round(2, 4_096, 1000 * MiB)], limits);
  t.is(fast.action, 'final-dump', '16 MiB at 1000 MiB/s is 16 ms');
  const slow = decideAfterRound([round(1, 65_536, 10 * MiB), round(2, 4_096, 10 * MiB)], limits);
  t.is(slow.action, 'another-round', '16 MiB at 10 MiB/s is 1.6 s');
});
