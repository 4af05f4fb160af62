/** What the benchmarks summarise their samples with. */

/** The median of the finite values (a failed round's NaN is left out); NaN when there is none. */
export function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!s.length) return Number.NaN;
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

/** Milliseconds since t0 (performance.now()). */
export const elapsedMs = (t0: number) => performance.now() - t0;
