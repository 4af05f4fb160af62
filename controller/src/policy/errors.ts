/** A policy's errors as records keep them: code, message, when, and CRIU's own lines where CRIU failed. */
import { isFerryError } from '../../../agent/src/errors.js';
import type { PolicyError } from './types.js';

export function policyError(code: string, message: string): PolicyError {
  return { code, message, at: new Date().toISOString() };
}

export function asPolicyError(err: unknown, doing?: string): PolicyError {
  const code = isFerryError(err) ? err.code : 'internal';
  const message = (err as Error).message ?? String(err);
  const criuLog = isFerryError(err) ? err.criuLog : undefined;
  return { ...policyError(code, doing ? `${doing}: ${message}` : message), ...(criuLog?.length ? { criuLog } : {}) };
}
