/** How the benchmarks print their figures: fixed-width text columns, or Markdown tables ready for the docs. */

/** One decimal, or '-' for a figure that is missing (NaN) or infinite. */
export const fmt = (x: number, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : '-');

/** a / b to `digits` decimals, '-' when either is missing. */
export const ratio = (a: number, b: number, digits = 3) => fmt(a / b, digits);

/** A line of cells, each padded to its column's width (`fallback` past the last one given). */
export const columns =
  (widths: number[], fallback = 8) =>
  (cells: string[]) =>
    cells.map((c, i) => c.padEnd(widths[i] ?? fallback)).join('');

/** A Markdown table whose columns are padded to their widest cell, so it reads as well in a terminal. */
export function markdownTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(3, h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${widths.map((w, i) => (cells[i] ?? '').padEnd(w)).join(' | ')} |`;
  return [line(header), `| ${widths.map((w) => '-'.repeat(w)).join(' | ')} |`, ...rows.map(line)].join('\n');
}
