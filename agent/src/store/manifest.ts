/** The manifest is what makes a checkpoint trustworthy: every file with its size and sha256. */
import type { CriuDumpStats } from '../criu/stats.js';
import type { RuntimeName } from '../runtimes/types.js';
import type { Encoding } from './encoding.js';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_VERSION = 1;

export interface ManifestFile {
  /** As stored: an encoded file's path ends in .fz, and size and sha256 are the stored bytes'. */
  path: string;
  size: number;
  sha256: string;
  /** An encoded file's plain content (encoding.ts): checked again when it is decoded for a restore. */
  plain?: { size: number; sha256: string };
}

export interface Manifest {
  version: typeof MANIFEST_VERSION;
  id: string;
  /** A pre-dump holds memory only and is a parent for later dumps; only a full checkpoint restores. */
  kind: 'full' | 'pre-dump';
  createdAt: string;
  node: string;
  container: { id: string; name: string; runtime: RuntimeName; image?: string };
  criuVersion: string;
  leaveRunning: boolean;
  /** The checkpoint whose memory images this one's CRIU images refer to (pre-dump chain). */
  parent?: string;
  /**
   * Post-copy: the memory is not in this checkpoint but served by a CRIU page server on the node that
   * took it, on this port, until a lazy restore has pulled it (agent/src/runtimes/lazy.ts).
   */
  lazyPages?: { port: number };
  /** A migration's own checkpoint: lives only until the migration ends (kept plain, checked on arrival only). */
  transient?: boolean;
  files: ManifestFile[];
  /** Compressed and/or encrypted at rest (encoding.ts); absent for plain checkpoints. */
  encoding?: Encoding;
  totalBytes: number;
  stats?: CriuDumpStats;
  /** Wall times: checkpointMs the runtime's checkpoint call, sealMs sealing the store entry, and the driver's phases where it says. */
  timings: { checkpointMs: number; sealMs: number; [phase: string]: number };
  runtimeMeta: Record<string, unknown>;
}
