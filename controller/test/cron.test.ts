/** Cron schedules: fields, names, steps and ranges, the day-of-month/day-of-week rule, and the next time in UTC. */
import test from 'ava';
import { isFerryError } from '../../agent/src/errors.js';
import { nextCronTime, parseCron } from '../src/policy/cron.js';

const at = (iso: string) => Date.parse(iso);
const next = (expr: string, from: string) => new Date(nextCronTime(parseCron(expr), at(from))).toISOString();

test('every 15 minutes: the next quarter hour, strictly after', (t) => {
  t.is(next('*/15 * * * *', '2026-11-26T10:07:30Z'), '2026-11-26T10:15:00.000Z');
  t.is(next('*/15 * * * *', '2026-11-26T10:15:00Z'), '2026-11-26T10:30:00.000Z');
  t.is(next('*/15 * * * *', '2026-11-26T23:59:00Z'), '2026-11-27T00:00:00.000Z');
});

test('03:00 on weekdays, with names; Saturday goes to Monday', (t) => {
  t.is(next('0 3 * * mon-fri', '2026-11-28T12:00:00Z'), '2026-11-30T03:00:00.000Z'); // Sat -> Mon
  t.is(next('0 3 * * MON-FRI', '2026-11-26T02:59:00Z'), '2026-11-26T03:00:00.000Z');
});

test('lists, ranges with steps, months by name, year end', (t) => {
  t.is(next('5,35 8-18/5 * * *', '2026-11-26T13:36:00Z'), '2026-11-26T18:05:00.000Z');
  t.is(next('0 0 1 jan *', '2026-11-26T00:00:00Z'), '2027-01-01T00:00:00.000Z');
});

test('both day fields restricted: either matches (Vixie cron); 7 is Sunday', (t) => {
  // The 1st of the month or any Sunday: from Thursday 26 Nov 2026, Sunday 29 Nov comes first.
  t.is(next('0 12 1 * 7', '2026-11-26T00:00:00Z'), '2026-11-29T12:00:00.000Z');
  t.is(next('0 12 1 * sun', '2026-11-30T00:00:00Z'), '2026-12-01T12:00:00.000Z');
});

test('29 February fires in the next leap year; 31 February never does', (t) => {
  t.is(next('0 0 29 2 *', '2026-11-26T00:00:00Z'), '2028-02-29T00:00:00.000Z');
  t.throws(() => nextCronTime(parseCron('0 0 31 2 *'), at('2026-11-26T00:00:00Z')));
});

test('bad expressions are refused naming the field and what is wrong', (t) => {
  for (const [expr, says] of [
    ['* * * *', /4 fields/],
    ['60 * * * *', /'60', outside 0-59/],
    ['*/0 * * * *', /step '0'/],
    ['0 5-2 * * *', /backwards/],
    ['0 0 * foo *', /'foo'/],
  ] as const) {
    const err = t.throws(() => parseCron(expr));
    t.true(isFerryError(err) && err.details?.field === 'spec.schedule.cron', expr);
    t.regex(err?.message ?? '', says);
  }
});
