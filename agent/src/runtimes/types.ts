/**
 * One interface over runc, podman and docker. A driver knows how its runtime names containers and where it
 * wants CRIU images; the agent's image store decides where checkpoints live and what is kept.
 */
import type { CriuDumpStats, CriuRestoreStats } from '../criu/stats.js';
import type { Thaw } from './freezer.js';
import type { PageServer } from './lazy.js';

export const RUNTIME_NAMES = ['runc', 'podman', 'docker'] as const;
export type RuntimeName = (typeof RUNTIME_NAMES)[number];

export type ContainerState = 'running' | 'paused' | 'stopped' | 'created' | 'unknown';

export interface ContainerInfo {
  id: string;
  name: string;
  runtime: RuntimeName;
  state: ContainerState;
  pid?: number;
  image?: string;
  /** The image's id, where the runtime restores onto that exact image (podman, docker). */
  imageId?: string;
  createdAt?: string;
  /** The OCI bundle directory, where the runtime exposes it (runc). */
  bundle?: string;
  /**
   * What checkpoint policies select containers by. runc: the bundle's OCI annotations; podman/docker: the
   * container's labels. Absent when there are none.
   */
  labels?: Record<string, string>;
  /**
   * podman: how the container was created (its CreateCommand), from which a twin can be prepared on another
   * node (podman-twin.ts). Only from a lookup of one container, not in lists.
   */
  createCommand?: string[];
}

/** `{ labels }` when the runtime reported any, else nothing: a ContainerInfo carries no empty labels. */
export function labelsField(labels: Record<string, string> | null | undefined): Pick<ContainerInfo, 'labels'> {
  return labels && Object.keys(labels).length > 0 ? { labels } : {};
}

export interface RuntimeStatus {
  runtime: RuntimeName;
  available: boolean;
  version?: string;
  /** Why the runtime cannot be used, phrased as the step that would fix it. */
  reason?: string;
}

export interface CheckpointRequest {
  container: ContainerInfo;
  /**
   * An empty directory owned by the image store. The driver leaves there everything a restore needs:
   * CRIU images under `checkpoint/`, the runtime's own descriptors (`config.dump`, `spec.dump`), the
   * container's filesystem changes (`rootfs-diff.tar`) and CRIU's `stats-dump` — the layout podman and
   * CRI-O use, so that an exported archive is readable by checkpointctl.
   */
  dir: string;
  leaveRunning: boolean;
  /** Pre-dump only memory, for incremental chains; the container keeps running. */
  preDump?: boolean;
  /** Parent images for an incremental dump, as a path relative to `dir/checkpoint`. */
  parentPath?: string;
  /**
   * Post-copy: dump everything but memory, then serve the memory from a CRIU page server on this TCP port
   * until a target has pulled it (runc only). The container stays frozen meanwhile (lazy.ts).
   */
  lazy?: { port: number };
  /**
   * The caller holds the container frozen (a coordinated checkpoint, agent/src/holds.ts): the driver must
   * neither freeze it itself nor let it go after the dump.
   */
  heldFrozen?: boolean;
  /**
   * Called with a path under `dir` (a file, or a directory such as CRIU's `checkpoint/`) once nothing in
   * it will change, while the driver goes on capturing the rest (spec, filesystem), so that the store
   * hashes and syncs it meanwhile. Paths never reported are hashed when the checkpoint is sealed.
   */
  onWritten?: (rel: string) => void;
  /**
   * podman, stopping dumps: CRIU's images taken in the container's own directory (no export archive) and
   * moved into `dir`, with the writable layer as its overlay upper directory. Restorable only in place:
   * into a prepared twin (RuntimeDriver.prepare) or back into the container it came from.
   */
  inPlace?: boolean;
}

export interface CheckpointOutcome {
  stats?: CriuDumpStats;
  /** Runtime-specific facts a later restore needs (original name, image, bundle config). */
  runtimeMeta: Record<string, unknown>;
  /** A lazy checkpoint's page server, still serving when the checkpoint call returns. */
  pageServer?: PageServer;
  /** Where the dump's time went, by phase (ms), for the drivers that say. */
  phases?: Record<string, number>;
}

export interface RestoreRequest {
  /** The directory a checkpoint was written to, as described in CheckpointRequest.dir. */
  dir: string;
  /** Name of the restored container; the driver picks one when absent. */
  name?: string;
  runtimeMeta: Record<string, unknown>;
  /**
   * Settles when the checkpoint has been verified against its manifest. A driver may prepare (unpack a
   * bundle) meanwhile, but must not start the restore before it resolves, and must undo its preparation
   * if it rejects.
   */
  verified: Promise<unknown>;
  /** A lazy checkpoint's memory: fetched on demand from the source's page server (runc only). */
  pageServer?: { host: string; port: number };
  /** An in-place checkpoint's container: a prepared twin, or the stopped original. */
  into?: string;
  /** Resume before memory is loaded: a lazy-pages daemon loads it from `dir`'s images meanwhile (runc only). */
  lazyMemory?: boolean;
}

export interface PrepareRequest {
  /** The twin's name. */
  name: string;
  /** The source container, as the source node's driver found it (with createCommand). */
  source: Required<Pick<ContainerInfo, 'createCommand' | 'image' | 'imageId'>>;
}

export interface RestoreOutcome {
  container: ContainerInfo;
  stats?: CriuRestoreStats;
  /** After a lazy restore: resolves when every page is in (from the source, or from local images), rejects if that failed. */
  pagesLoaded?: Promise<void>;
  /** Where the restore's time went, by phase (ms), for the drivers that say. */
  phases?: Record<string, number>;
}

export interface RuntimeDriver {
  readonly name: RuntimeName;
  status(): Promise<RuntimeStatus>;
  list(): Promise<ContainerInfo[]>;
  /** Finds a container by id, unique id prefix or name; undefined when there is none. */
  find(ref: string): Promise<ContainerInfo | undefined>;
  checkpoint(req: CheckpointRequest): Promise<CheckpointOutcome>;
  restore(req: RestoreRequest): Promise<RestoreOutcome>;
  /**
   * Creates, without starting it, a twin of another node's container that an in-place checkpoint of it can
   * be restored into (podman). Refuses with 'unsupported' when no faithful twin can be made.
   */
  prepare?(req: PrepareRequest): Promise<ContainerInfo>;
  /** Runs a command inside the container and returns its stdout (used to verify a restored workload). */
  exec(ref: string, argv: string[]): Promise<string>;
  /** Whether an image (id or name) is present, for runtimes whose restore needs it; runc carries its rootfs. */
  hasImage?(ref: string): Promise<boolean>;
  /** Stops and removes a container (cleanup after migration, tests). Missing containers are not an error. */
  remove(ref: string): Promise<void>;
  /** Freezes a running container and returns its thaw; absent where a frozen container cannot be checkpointed (docker). */
  freeze?(container: ContainerInfo): Promise<Thaw>;
  /** Thaws a container frozen by `freeze` in an earlier life of the agent (killed while holding it). */
  thaw?(container: ContainerInfo): Promise<void>;
}
