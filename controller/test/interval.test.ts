/** The adaptive checkpoint interval: Young's and Daly's optimum, clamped to operator bounds. */
import test from 'ava';
import { adaptiveInterval, dalyInterval, expectedWasteFraction, formatDuration, youngInterval } from '../src/policy/interval.js';

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

function closeTo(actual: number, expected: number, relative = 1e-6): boolean {
  return Math.abs(actual - expected) <= relative * Math.abs(expected);
}

test('young: C = 5 min, M = 24 h gives exactly 2 h', (t) => {
  // sqrt(2 · 300 s · 86 400 s) = sqrt(51 840 000 s²) = 7200 s. A perfect square, so exact in floating point too.
  t.is(youngInterval(5 * MINUTE, 24 * HOUR), 7200 * SECOND);
});

test('daly: C = 5 min, M = 24 h gives 7001.38… s', (t) => {
  // C/(2M) = 300/172 800 = 1/576, so sqrt(C/(2M)) = 1/24.
  // T = 7200 · (1 + 1/72 + 1/5184) − 300 = 7200 + 100 + 25/18 − 300 = 7001 + 7/18 s = 7 001 388.888… ms.
  const expected = (7001 + 7 / 18) * SECOND;
  const actual = dalyInterval(5 * MINUTE, 24 * HOUR);
  t.true(closeTo(actual, expected), `${actual} vs ${expected}`);
  // Below Young's by about 2C/3 = 200 s: Daly subtracts C and adds back C/3 (+ a second-order term).
  t.true(actual < youngInterval(5 * MINUTE, 24 * HOUR));
});

test('daly: a checkpoint costing 2M or more gives M', (t) => {
  t.is(dalyInterval(10 * MINUTE, 5 * MINUTE), 5 * MINUTE);
  t.is(dalyInterval(50 * HOUR, 24 * HOUR), 24 * HOUR);
  // Exactly at the boundary, C = 2M: the second branch.
  t.is(dalyInterval(2 * HOUR, 1 * HOUR), 1 * HOUR);
  const r = adaptiveInterval({ costMs: 3 * HOUR, mtbfMs: HOUR, minMs: 0, maxMs: Number.POSITIVE_INFINITY, formula: 'daly' });
  t.is(r.intervalMs, HOUR);
  t.true(r.reason.includes('C ≥ 2M'), r.reason);
});

test('an unclamped interval carries the raw value, the formula and the inputs', (t) => {
  const r = adaptiveInterval({ costMs: 5 * MINUTE, mtbfMs: 24 * HOUR, minMs: MINUTE, maxMs: 6 * HOUR, formula: 'young' });
  t.deepEqual(r, {
    intervalMs: 2 * HOUR,
    rawMs: 2 * HOUR,
    formula: 'young',
    inputs: { costMs: 5 * MINUTE, mtbfMs: 24 * HOUR, restartMs: 0 },
    reason: 'young: sqrt(2·C·M) with C=5 min, M=24 h → 2 h',
  });
  t.false('clampedTo' in r);
});

test('a cheap checkpoint is clamped up to minMs, and the reason says so', (t) => {
  // C = 120 ms, M = 1 h: Young sqrt(2 · 0.12 s · 3600 s) = sqrt(864) s = 29 393.88 ms.
  // Daly: sqrt(2CM) · ⅓ · sqrt(C/2M) = C/3 exactly, so T = sqrt(2CM) − 2C/3 + sqrt(2CM) · C/(18M)
  //   = 29 393.88 − 80 + 29 393.88/540 000 = 29 313.93 ms. Both below a 1 min floor.
  const r = adaptiveInterval({ costMs: 120, mtbfMs: HOUR, minMs: MINUTE, maxMs: HOUR, formula: 'daly' });
  t.is(r.intervalMs, MINUTE);
  t.is(r.clampedTo, 'min');
  t.true(closeTo(r.rawMs, Math.sqrt(864) * SECOND - 80 + (Math.sqrt(864) * SECOND) / 540_000), String(r.rawMs));
  t.is(r.formula, 'daly');
  t.true(r.reason.startsWith('daly:'), r.reason);
  t.true(r.reason.includes('C=120 ms, M=1 h → 29.3 s'), r.reason);
  t.true(r.reason.endsWith('clamped to min 1 min'), r.reason);
});

test('an interval past maxMs is clamped down to it', (t) => {
  const r = adaptiveInterval({ costMs: 5 * MINUTE, mtbfMs: 24 * HOUR, minMs: 0, maxMs: HOUR, formula: 'young' });
  t.is(r.rawMs, 2 * HOUR);
  t.is(r.intervalMs, HOUR);
  t.is(r.clampedTo, 'max');
  t.true(r.reason.startsWith('young:'), r.reason);
  t.true(r.reason.endsWith('→ 2 h, clamped to max 1 h'), r.reason);
});

test('minMs equal to maxMs pins the interval', (t) => {
  const r = adaptiveInterval({ costMs: 5 * MINUTE, mtbfMs: 24 * HOUR, minMs: 10 * MINUTE, maxMs: 10 * MINUTE, formula: 'daly' });
  t.is(r.intervalMs, 10 * MINUTE);
  t.is(r.clampedTo, 'max');
});

test('the optimum minimises the expected waste', (t) => {
  // C = 5 min, M = 24 h (C/M ≈ 0.35%), T = 7200 s:
  //   W(T)    = 300/7500 + 7500/172 800 = 0.04000 + 0.04340 = 0.08340
  //   W(0.8T) = 300/6060 + 6060/172 800 = 0.04950 + 0.03507 = 0.08457
  //   W(1.2T) = 300/8940 + 8940/172 800 = 0.03356 + 0.05174 = 0.08529
  const C = 5 * MINUTE;
  const M = 24 * HOUR;
  const young = youngInterval(C, M);
  const w = expectedWasteFraction(young, C, M);
  t.true(closeTo(w, 300 / 7500 + 7500 / 172_800, 1e-12), String(w));
  t.true(w <= expectedWasteFraction(0.8 * young, C, M));
  t.true(w <= expectedWasteFraction(1.2 * young, C, M));

  const daly = dalyInterval(C, M);
  const wd = expectedWasteFraction(daly, C, M);
  t.true(wd <= expectedWasteFraction(0.8 * daly, C, M));
  t.true(wd <= expectedWasteFraction(1.2 * daly, C, M));

  // The first-order model's exact minimiser is sqrt(2CM) − C (set d/dT of C/(T+C) + (T+C)/2M to zero).
  const best = Math.sqrt(2 * C * M) - C;
  const wb = expectedWasteFraction(best, C, M);
  for (const f of [0.9, 0.99, 1.01, 1.1]) t.true(wb <= expectedWasteFraction(f * best, C, M), `factor ${f}`);
});

test('restart time adds R/M to the waste and does not move the interval', (t) => {
  const C = 5 * MINUTE;
  const M = 24 * HOUR;
  const T = youngInterval(C, M);
  t.true(closeTo(expectedWasteFraction(T, C, M, 10 * MINUTE) - expectedWasteFraction(T, C, M), (10 * MINUTE) / M, 1e-9));
  const base = { costMs: C, mtbfMs: M, minMs: 0, maxMs: Number.POSITIVE_INFINITY, formula: 'daly' } as const;
  const withRestart = adaptiveInterval({ ...base, restartMs: 10 * MINUTE });
  t.is(withRestart.intervalMs, adaptiveInterval(base).intervalMs);
  t.is(withRestart.inputs.restartMs, 10 * MINUTE);
});

test('durations format as ms, s, min and h', (t) => {
  t.is(formatDuration(850), '850 ms');
  t.is(formatDuration(12_500), '12.5 s');
  t.is(formatDuration(4.2 * MINUTE), '4.2 min');
  t.is(formatDuration(3.1 * HOUR), '3.1 h');
  t.is(formatDuration(2 * HOUR), '2 h');
  // The unit is chosen after rounding: 59.99 s would print as '60 s'.
  t.is(formatDuration(59_990), '1 min');
  t.is(formatDuration(999.6), '1 s');
});

test('invalid inputs throw a RangeError naming the field', (t) => {
  const ok = { costMs: 5 * MINUTE, mtbfMs: 24 * HOUR, minMs: MINUTE, maxMs: HOUR, formula: 'young' } as const;
  for (const costMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => adaptiveInterval({ ...ok, costMs }), { instanceOf: RangeError, message: /costMs/ }, `costMs ${costMs}`);
  }
  for (const mtbfMs of [0, -1, Number.NaN]) {
    t.throws(() => adaptiveInterval({ ...ok, mtbfMs }), { instanceOf: RangeError, message: /mtbfMs/ }, `mtbfMs ${mtbfMs}`);
  }
  t.throws(() => adaptiveInterval({ ...ok, minMs: 2 * HOUR }), { instanceOf: RangeError, message: /minMs.*maxMs/ });
  t.throws(() => adaptiveInterval({ ...ok, restartMs: -1 }), { instanceOf: RangeError, message: /restartMs/ });
  // Policies arrive as JSON, so the type does not guarantee the formula.
  t.throws(() => adaptiveInterval({ ...ok, formula: 'weibull' as unknown as 'young' }), { instanceOf: RangeError, message: /formula/ });

  t.throws(() => youngInterval(0, HOUR), { instanceOf: RangeError, message: /costMs/ });
  t.throws(() => dalyInterval(MINUTE, 0), { instanceOf: RangeError, message: /mtbfMs/ });
  t.throws(() => expectedWasteFraction(0, MINUTE, HOUR), { instanceOf: RangeError, message: /intervalMs/ });
});
