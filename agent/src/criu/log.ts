/**
 * CRIU logs are long; a user needs the few lines that say what went wrong. Errors first, then the tail for
 * context. The rlimit complaint that every run prints on these hosts is harmless noise and is dropped.
 */
import { readFile } from 'node:fs/promises';

const HARMLESS = [/rlimit: Can't setup RLIMIT_NOFILE/];

export function relevantCriuLines(log: string, tail = 15): string[] {
  const lines = log.split('\n').filter((l) => l.trim() && !HARMLESS.some((re) => re.test(l)));
  const errors = lines.filter((l) => /\bError\b|\bBUG\b|\bFatal\b/.test(l));
  const last = lines.slice(-tail);
  return [...new Set([...errors.slice(-tail), ...last])];
}

export async function relevantCriuLogLines(path: string, tail = 15): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  return text ? relevantCriuLines(text, tail) : [];
}
