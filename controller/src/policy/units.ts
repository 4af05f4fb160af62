/**
 * Durations and sizes as people write them in policy files ("90s", "5m", "10Gi"), parsed once at the API
 * edge so that everything behind it works in milliseconds and bytes.
 */
import { FerryError } from '../../../agent/src/errors.js';

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const SIZE_UNITS: Record<string, number> = { '': 1, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };

/** The same patterns go into the JSON schema, so a bad value is refused at the edge with the field named. */
export const DURATION_PATTERN = '^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$';
export const SIZE_PATTERN = '^[0-9]+(\\.[0-9]+)?(K|M|G|T|Ki|Mi|Gi|Ti)?$';

export function parseDuration(text: string, field: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$/.exec(text);
  if (!m?.[1] || !m[2]) {
    throw new FerryError('bad_request', `${field}: '${text}' is not a duration such as 500ms, 30s, 5m, 2h or 7d`, {
      details: { field },
    });
  }
  return Math.round(Number(m[1]) * (DURATION_UNITS[m[2]] as number));
}

export function parseSize(text: string | number, field: string): number {
  if (typeof text === 'number') return text;
  const m = /^([0-9]+(?:\.[0-9]+)?)(K|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(text);
  if (!m?.[1]) {
    throw new FerryError('bad_request', `${field}: '${text}' is not a size such as 512Mi, 10Gi or 2G`, { details: { field } });
  }
  return Math.round(Number(m[1]) * (SIZE_UNITS[m[2] ?? ''] as number));
}
