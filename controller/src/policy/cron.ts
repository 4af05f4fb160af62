/**
 * Cron schedules for policies: the five standard fields (minute hour day-of-month month day-of-week),
 * with `*`, lists, ranges, steps and month/day names, evaluated in UTC (a controller's schedule must not
 * shift with the host's time zone or daylight saving). As in Vixie cron, when both day fields are
 * restricted a day matches if either does.
 */
import { FerryError } from '../../../agent/src/errors.js';

interface Field {
  min: number;
  max: number;
  names?: string[];
}

const FIELDS: Field[] = [
  { min: 0, max: 59 },
  { min: 0, max: 23 },
  { min: 1, max: 31 },
  { min: 1, max: 12, names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'] },
  { min: 0, max: 7, names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] },
];

export interface Cron {
  minutes: Set<number>;
  hours: Set<number>;
  days: Set<number>;
  months: Set<number>;
  weekdays: Set<number>;
  /** Whether each day field was restricted (not `*`): decides how the two combine. */
  daysRestricted: boolean;
  weekdaysRestricted: boolean;
}

export function parseCron(text: string, field = 'spec.schedule.cron'): Cron {
  const parts = text.trim().split(/\s+/);
  if (parts.length !== 5) {
    throw new FerryError('bad_request', `${field}: '${text}' has ${parts.length} fields; cron wants 5 (minute hour day month weekday)`, {
      hint: "e.g. '*/15 * * * *' (every 15 minutes) or '0 3 * * mon-fri' (03:00 UTC on weekdays)",
      details: { field },
    });
  }
  const sets = parts.map((p, i) => parseField(p, FIELDS[i] as Field, field));
  const weekdays = sets[4] as Set<number>;
  if (weekdays.has(7)) weekdays.add(0); // 7 is Sunday too
  return {
    minutes: sets[0] as Set<number>,
    hours: sets[1] as Set<number>,
    days: sets[2] as Set<number>,
    months: sets[3] as Set<number>,
    weekdays,
    daysRestricted: parts[2] !== '*',
    weekdaysRestricted: parts[4] !== '*',
  };
}

function parseField(text: string, f: Field, field: string): Set<number> {
  const out = new Set<number>();
  const bad = (why: string) => new FerryError('bad_request', `${field}: '${text}' ${why}`, { details: { field } });
  const value = (v: string): number => {
    const named = f.names?.indexOf(v.toLowerCase()) ?? -1;
    const n = named >= 0 ? named + (f.min === 1 ? 1 : 0) : /^\d+$/.test(v) ? Number(v) : Number.NaN;
    if (!Number.isInteger(n) || n < f.min || n > f.max) throw bad(`has '${v}', outside ${f.min}-${f.max}`);
    return n;
  };
  for (const item of text.split(',')) {
    const [range, stepText] = item.split('/');
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isInteger(step) || step < 1) throw bad(`has step '${stepText}', not a positive integer`);
    let lo: number;
    let hi: number;
    if (range === '*') [lo, hi] = [f.min, f.max];
    else if (range?.includes('-')) {
      const [a, b] = range.split('-');
      [lo, hi] = [value(a ?? ''), value(b ?? '')];
      if (lo > hi) throw bad(`has the range '${range}' backwards`);
    } else {
      lo = value(range ?? '');
      hi = stepText === undefined ? lo : f.max;
    }
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return out;
}

/** The first minute strictly after `after` (ms since the epoch) that the schedule names, in UTC. */
export function nextCronTime(cron: Cron, after: number): number {
  const t = new Date(after);
  t.setUTCSeconds(0, 0);
  t.setUTCMinutes(t.getUTCMinutes() + 1);
  // Four years bound the search: every valid schedule (even 29 February) fires within them.
  const limit = after + 4 * 366 * 86_400_000;
  while (t.getTime() <= limit) {
    if (!cron.months.has(t.getUTCMonth() + 1)) {
      t.setUTCMonth(t.getUTCMonth() + 1, 1);
      t.setUTCHours(0, 0);
      continue;
    }
    if (!dayMatches(cron, t)) {
      t.setUTCDate(t.getUTCDate() + 1);
      t.setUTCHours(0, 0);
      continue;
    }
    if (!cron.hours.has(t.getUTCHours())) {
      t.setUTCHours(t.getUTCHours() + 1, 0);
      continue;
    }
    if (!cron.minutes.has(t.getUTCMinutes())) {
      t.setUTCMinutes(t.getUTCMinutes() + 1);
      continue;
    }
    return t.getTime();
  }
  throw new FerryError('bad_request', 'spec.schedule.cron never fires (e.g. 31 February)', { details: { field: 'spec.schedule.cron' } });
}

function dayMatches(cron: Cron, t: Date): boolean {
  const dom = cron.days.has(t.getUTCDate());
  const dow = cron.weekdays.has(t.getUTCDay());
  if (cron.daysRestricted && cron.weekdaysRestricted) return dom || dow;
  return dom && dow;
}
