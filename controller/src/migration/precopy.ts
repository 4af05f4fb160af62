/**
 * When to stop copying memory while the container runs, and freeze it.
 *
 * Each pre-copy round re-sends what the workload dirtied since the previous one. Rounds pay off while the
 * delta shrinks, i.e. while the link moves pages faster than the workload dirties them. The decision
 * adapts to what was measured in this migration, not to fixed page counts: after every round it estimates
 * the downtime a final dump would cost now,
 *
 *   frozen time of the last round (CRIU's own figure: freezing, dumping the non-memory state)
 *   + bytes dirtied in the last round / bandwidth measured on the last transfer
 *   + time to restore on the target (the target agent's recent median, GET /v1/stats; a prior until it
 *     has restored anything),
 *
 * and stops when that meets the target (maxDowntimeMs). It also stops when more rounds cannot help: the
 * delta stopped shrinking (within 10% of the previous round: the dirty rate has caught up with the link,
 * the case where P.Haul's fixed "10% growth" and Incus's "70% skipped" rules loop or give up blindly),
 * the round budget is spent, or the bytes sent reach maxBytesFactor times the memory (so a workload that
 * dirties faster than the link cannot make the migration send memory forever).
 */

export interface RoundFigures {
  round: number;
  checkpointId: string;
  /** Pages CRIU wrote in this round (all of memory in round 1, the dirtied delta after). */
  pagesWritten: number;
  frozenTimeMs: number;
  dumpMs: number;
  bytesSent: number;
  transferMs: number;
  bandwidthBytesPerSecond: number;
  /** Downtime a final dump right after this round would cost, by the formula above. */
  estimatedDowntimeMs: number;
}

export interface PrecopyLimits {
  maxDowntimeMs: number;
  maxRounds: number;
  maxBytesFactor: number;
}

/**
 * withoutRounds: the rounds did not catch up with the workload at all (the last delta is still most of its
 * memory), so the final dump takes all of memory on its own, as stop-and-copy does, and the target restores
 * it alone: building on rounds that hold nothing the final dump does not would only add their reading.
 */
export type PrecopyDecision = { action: 'another-round' } | { action: 'final-dump'; reason: string; withoutRounds?: boolean };

export const PAGE_SIZE = 4096;
/** A delta this close to the previous one is not shrinking. */
export const CONVERGENCE_RATIO = 0.9;
/** A last delta this large a share of the first round means pre-copy saved nothing: fall back to stop-and-copy. */
export const FALLBACK_SHARE = 0.5;
/** What a restore costs before the target has measured any (runc, small container, on these machines). */
export const RESTORE_PRIOR_MS = 200;

export function estimateDowntimeMs(
  r: Pick<RoundFigures, 'frozenTimeMs' | 'pagesWritten' | 'bandwidthBytesPerSecond'>,
  restoreMs = RESTORE_PRIOR_MS,
): number {
  const transferMs =
    r.bandwidthBytesPerSecond > 0 ? ((r.pagesWritten * PAGE_SIZE) / r.bandwidthBytesPerSecond) * 1000 : Number.POSITIVE_INFINITY;
  return Math.round(r.frozenTimeMs + transferMs + restoreMs);
}

export function decideAfterRound(rounds: RoundFigures[], limits: PrecopyLimits): PrecopyDecision {
  const last = rounds.at(-1);
  if (!last) return { action: 'another-round' };
  if (last.estimatedDowntimeMs <= limits.maxDowntimeMs) {
    return {
      action: 'final-dump',
      reason: `estimated downtime ${last.estimatedDowntimeMs} ms meets the target of ${limits.maxDowntimeMs} ms`,
    };
  }
  const previous = rounds.at(-2);
  if (previous && last.pagesWritten >= previous.pagesWritten * CONVERGENCE_RATIO) {
    const first = rounds[0]?.pagesWritten ?? 0;
    if (first > 0 && last.pagesWritten >= first * FALLBACK_SHARE) {
      return {
        action: 'final-dump',
        withoutRounds: true,
        reason: `the workload dirties memory as fast as it is copied (${last.pagesWritten} of ${first} pages again): falling back to stop-and-copy, the rounds left unused`,
      };
    }
    return {
      action: 'final-dump',
      reason: `the delta stopped shrinking (${last.pagesWritten} pages after ${previous.pagesWritten}): more rounds would re-send what the workload keeps dirtying`,
    };
  }
  if (rounds.length >= limits.maxRounds) return { action: 'final-dump', reason: `the round budget (${limits.maxRounds}) is spent` };
  const memoryBytes = (rounds[0]?.pagesWritten ?? 0) * PAGE_SIZE;
  const sent = rounds.reduce((sum, r) => sum + r.bytesSent, 0);
  if (memoryBytes > 0 && sent >= limits.maxBytesFactor * memoryBytes) {
    return { action: 'final-dump', reason: `${sent} bytes sent, ${limits.maxBytesFactor}x the memory: the byte budget is spent` };
  }
  return { action: 'another-round' };
}
