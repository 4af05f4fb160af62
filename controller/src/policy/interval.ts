/**
 * How long a checkpoint policy lets a container run between checkpoints.
 *
 * Checkpointing too often spends the run on dumps; too rarely, a failure throws away a long stretch of work.
 * The interval that balances the two depends on what one checkpoint costs (C, measured on this container)
 * and how often the node fails (M, mean time between failures), so it is computed rather than configured:
 *
 *   Young (first order):  T = sqrt(2·C·M)
 *     J. W. Young, "A first order approximation to the optimum checkpoint interval",
 *     Communications of the ACM 17(9):530-531, 1974.
 *
 *   Daly (higher order):  T = sqrt(2·C·M)·[1 + (1/3)·sqrt(C/(2M)) + (1/9)·(C/(2M))] − C   for C < 2M
 *                         T = M                                                            for C ≥ 2M
 *     J. T. Daly, "A higher order estimate of the optimum checkpoint interval for restart dumps",
 *     Future Generation Computer Systems 22(3):303-312, 2006.
 *
 * Both give the compute time between the end of one checkpoint and the start of the next (Daly's T
 * excludes C explicitly). Young's estimate is good while C ≪ M; Daly's correction matters when checkpoints
 * are expensive relative to the failure rate, and it stays defined when C approaches M. Neither optimum
 * depends on the restart time R: a failure costs R whatever T is, so R only adds a constant to the waste.
 *
 * The result is clamped to operator bounds (minMs, maxMs), because a tiny measured cost would otherwise
 * checkpoint back to back and a huge MTBF would never checkpoint at all.
 */

export type IntervalFormula = 'young' | 'daly';

export interface AdaptiveIntervalInput {
  /** Measured wall-clock cost of one checkpoint. */
  costMs: number;
  /** Mean time between failures of the node the container runs on. */
  mtbfMs: number;
  /** Time to restart after a failure; validated and echoed, it does not move the optimum (see above). */
  restartMs?: number;
  minMs: number;
  /** May be Infinity for no upper bound. */
  maxMs: number;
  formula: IntervalFormula;
}

export interface AdaptiveInterval {
  /** The interval to use: rawMs clamped to [minMs, maxMs]. */
  intervalMs: number;
  /** The formula's value before clamping. */
  rawMs: number;
  formula: IntervalFormula;
  clampedTo?: 'min' | 'max';
  inputs: { costMs: number; mtbfMs: number; restartMs: number };
  /** One short sentence for a status field. */
  reason: string;
}

function requirePositive(field: string, value: number): void {
  // NaN fails every comparison, so test for the good case rather than the bad one.
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${field} must be a finite number > 0, got ${value}`);
}

function requireNonNegative(field: string, value: number): void {
  if (!(Number.isFinite(value) && value >= 0)) throw new RangeError(`${field} must be a finite number >= 0, got ${value}`);
}

export function youngInterval(costMs: number, mtbfMs: number): number {
  requirePositive('costMs', costMs);
  requirePositive('mtbfMs', mtbfMs);
  return Math.sqrt(2 * costMs * mtbfMs);
}

export function dalyInterval(costMs: number, mtbfMs: number): number {
  requirePositive('costMs', costMs);
  requirePositive('mtbfMs', mtbfMs);
  // Past C = 2M the series no longer converges to anything useful, and Daly's analysis gives M itself: the
  // expected run before a failure. The two branches do not meet at C = 2M (the series gives 8M/9); that
  // step is in the paper.
  if (costMs >= 2 * mtbfMs) return mtbfMs;
  const x = costMs / (2 * mtbfMs);
  return Math.sqrt(2 * costMs * mtbfMs) * (1 + Math.sqrt(x) / 3 + x / 9) - costMs;
}

/**
 * Fraction of wall-clock time lost, to first order, when checkpointing every intervalMs of compute:
 * C/(T+C) spent dumping, plus (T+C)/(2M) redone after failures (on average a failure lands halfway through
 * a segment), plus R/M restarting. Its exact minimiser is T = sqrt(2·C·M) − C, which is Young's estimate
 * to first order in C/M and what Daly's refines; tests use it to check the formulas sit at the minimum.
 */
export function expectedWasteFraction(intervalMs: number, costMs: number, mtbfMs: number, restartMs = 0): number {
  requirePositive('intervalMs', intervalMs);
  requirePositive('costMs', costMs);
  requirePositive('mtbfMs', mtbfMs);
  requireNonNegative('restartMs', restartMs);
  const segment = intervalMs + costMs;
  return costMs / segment + segment / (2 * mtbfMs) + restartMs / mtbfMs;
}

function trimmed(value: number): string {
  return value.toFixed(1).replace(/\.0$/, '');
}

/** '850 ms', '12.5 s', '4.2 min', '3.1 h': short enough for a status line, precise enough to compare. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return Number.isNaN(ms) ? 'NaN' : ms > 0 ? '∞' : '-∞';
  const sign = ms < 0 ? '-' : '';
  const abs = Math.abs(ms);
  // Pick the unit after rounding, so 59 990 ms reads '1 min', not '60 s'.
  if (Math.round(abs) < 1000) return `${sign}${Math.round(abs)} ms`;
  if (Number(trimmed(abs / 1000)) < 60) return `${sign}${trimmed(abs / 1000)} s`;
  if (Number(trimmed(abs / 60_000)) < 60) return `${sign}${trimmed(abs / 60_000)} min`;
  return `${sign}${trimmed(abs / 3_600_000)} h`;
}

const DESCRIPTION: Record<IntervalFormula, string> = {
  young: 'sqrt(2·C·M)',
  daly: 'sqrt(2·C·M)·(1 + …) − C',
};

export function adaptiveInterval(input: AdaptiveIntervalInput): AdaptiveInterval {
  const { costMs, mtbfMs, minMs, maxMs, formula } = input;
  const restartMs = input.restartMs ?? 0;
  requirePositive('costMs', costMs);
  requirePositive('mtbfMs', mtbfMs);
  requireNonNegative('restartMs', restartMs);
  requireNonNegative('minMs', minMs);
  if (Number.isNaN(maxMs) || maxMs <= 0) throw new RangeError(`maxMs must be a number > 0, got ${maxMs}`);
  if (minMs > maxMs) throw new RangeError(`minMs (${minMs}) must not exceed maxMs (${maxMs})`);

  let rawMs: number;
  let how: string;
  if (formula === 'young') {
    rawMs = youngInterval(costMs, mtbfMs);
    how = DESCRIPTION.young;
  } else if (formula === 'daly') {
    rawMs = dalyInterval(costMs, mtbfMs);
    how = costMs >= 2 * mtbfMs ? 'C ≥ 2M, so T = M' : DESCRIPTION.daly;
  } else {
    // The type rules this out, but policies arrive as JSON.
    throw new RangeError(`formula must be 'young' or 'daly', got ${String(formula)}`);
  }

  let intervalMs = rawMs;
  let clampedTo: 'min' | 'max' | undefined;
  if (rawMs < minMs) {
    intervalMs = minMs;
    clampedTo = 'min';
  } else if (rawMs > maxMs) {
    intervalMs = maxMs;
    clampedTo = 'max';
  }

  let reason = `${formula}: ${how} with C=${formatDuration(costMs)}, M=${formatDuration(mtbfMs)} → ${formatDuration(rawMs)}`;
  if (clampedTo) reason += `, clamped to ${clampedTo} ${formatDuration(intervalMs)}`;

  return {
    intervalMs,
    rawMs,
    formula,
    ...(clampedTo ? { clampedTo } : {}),
    inputs: { costMs, mtbfMs, restartMs },
    reason,
  };
}
