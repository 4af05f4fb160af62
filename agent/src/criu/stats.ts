/**
 * CRIU writes its own measurements to `stats-dump` and `stats-restore` in the work directory: two magic
 * numbers, a little-endian length, then a `stats_entry` protobuf (criu/images/stats.proto). These figures
 * are what Ferry reports; nothing is estimated. CRIU's times are microseconds; we report milliseconds.
 */
import { readFile } from 'node:fs/promises';
import { decodeMessage, type FieldValue } from './protobuf.js';

const IMG_SERVICE_MAGIC = 0x55105940;
const STATS_MAGIC = 0x57093306;
export const PAGE_SIZE = 4096;

export interface CriuDumpStats {
  freezingTimeMs: number;
  frozenTimeMs: number;
  memdumpTimeMs: number;
  memwriteTimeMs: number;
  pagesScanned: number;
  pagesSkippedParent: number;
  pagesWritten: number;
  pagesLazy: number;
  /** pagesWritten x page size: the memory this dump wrote. */
  bytesWritten: number;
}

export interface CriuRestoreStats {
  pagesCompared: number;
  pagesSkippedCow: number;
  forkingTimeMs: number;
  restoreTimeMs: number;
  pagesRestored: number;
}

function num(fields: Map<number, FieldValue>, n: number): number {
  const v = fields.get(n);
  return typeof v === 'bigint' ? Number(v) : 0;
}

const usToMs = (us: number) => Math.round(us) / 1000;

function statsEntry(file: Uint8Array, path: string): Map<number, FieldValue> {
  if (file.length < 12) throw new Error(`${path}: too short to be a CRIU stats image`);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const m0 = view.getUint32(0, true);
  const m1 = view.getUint32(4, true);
  if (m0 !== IMG_SERVICE_MAGIC || m1 !== STATS_MAGIC) {
    throw new Error(`${path}: not a CRIU stats image (magic ${m0.toString(16)}/${m1.toString(16)})`);
  }
  const len = view.getUint32(8, true);
  if (12 + len > file.length) throw new Error(`${path}: truncated stats entry`);
  return decodeMessage(file.subarray(12, 12 + len));
}

function submessage(entry: Map<number, FieldValue>, field: number, path: string): Map<number, FieldValue> {
  const raw = entry.get(field);
  if (!(raw instanceof Uint8Array)) throw new Error(`${path}: no ${field === 1 ? 'dump' : 'restore'} section`);
  return decodeMessage(raw);
}

export function decodeDumpStats(file: Uint8Array, path = 'stats-dump'): CriuDumpStats {
  const d = submessage(statsEntry(file, path), 1, path);
  const pagesWritten = num(d, 7);
  return {
    freezingTimeMs: usToMs(num(d, 1)),
    frozenTimeMs: usToMs(num(d, 2)),
    memdumpTimeMs: usToMs(num(d, 3)),
    memwriteTimeMs: usToMs(num(d, 4)),
    pagesScanned: num(d, 5),
    pagesSkippedParent: num(d, 6),
    pagesWritten,
    pagesLazy: num(d, 9),
    bytesWritten: pagesWritten * PAGE_SIZE,
  };
}

export function decodeRestoreStats(file: Uint8Array, path = 'stats-restore'): CriuRestoreStats {
  const r = submessage(statsEntry(file, path), 2, path);
  return {
    pagesCompared: num(r, 1),
    pagesSkippedCow: num(r, 2),
    forkingTimeMs: usToMs(num(r, 3)),
    restoreTimeMs: usToMs(num(r, 4)),
    pagesRestored: num(r, 5),
  };
}

/** Reads a stats image; undefined when CRIU left none (it writes them only on success). */
export async function readDumpStats(path: string): Promise<CriuDumpStats | undefined> {
  const file = await readFile(path).catch(() => undefined);
  return file ? decodeDumpStats(file, path) : undefined;
}

export async function readRestoreStats(path: string): Promise<CriuRestoreStats | undefined> {
  const file = await readFile(path).catch(() => undefined);
  return file ? decodeRestoreStats(file, path) : undefined;
}
