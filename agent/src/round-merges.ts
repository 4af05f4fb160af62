/**
 * The pre-copy round chains this agent merges as they arrive (criu/merged-rounds.ts), by the id of the
 * latest round merged: a round on that one extends the merge, and the final dump on it takes it for its
 * restore. Only runc rounds are merged (podman restores from its own archive), and only a migration's own
 * (transient) ones, which arrive one after another while the source runs. Merging never fails a round's
 * arrival nor a restore: a chain that cannot be merged restores from its rounds as before.
 */
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { MergedRounds } from './criu/merged-rounds.js';
import type { Manifest } from './store/manifest.js';

export class RoundMerges {
  /** The merge, or why the chain up to this round is not merged. */
  private readonly byTip = new Map<string, Promise<MergedRounds | string>>();

  constructor(
    /** A directory on the image store's filesystem: the merged pages move into a restore's images by rename. */
    readonly root: string,
  ) {}

  /** Removes what an earlier run of the agent left merging. */
  clear(): Promise<void> {
    return rm(this.root, { recursive: true, force: true });
  }

  /** A checkpoint arrived: a first round starts a merge, a later one extends its parent's. */
  arrived(m: Manifest, dirOf: (id: string) => string): void {
    if (m.kind !== 'pre-dump' || !m.transient || m.encoding || m.container.runtime !== 'runc') return;
    const images = path.join(dirOf(m.id), 'checkpoint');
    const previous = m.parent ? this.byTip.get(m.parent) : undefined;
    if (m.parent && !previous) return;
    if (m.parent) this.byTip.delete(m.parent);
    const why = (err: unknown) => `round ${m.id} could not be merged: ${(err as Error).message}`;
    const merged = previous
      ? previous.then(async (r) => {
          if (typeof r === 'string') return r;
          try {
            await r.apply(images);
            return r;
          } catch (err) {
            await r.dispose();
            return why(err);
          }
        })
      : MergedRounds.start(images, path.join(this.root, m.id)).catch(why);
    this.byTip.set(m.id, merged);
  }

  /**
   * The merge whose latest round is `tip`, taken out for a restore of the final dump on it; why there is
   * none where its rounds could not be merged; undefined for a chain this agent never merged.
   */
  async take(tip: string): Promise<MergedRounds | string | undefined> {
    const merged = this.byTip.get(tip);
    this.byTip.delete(tip);
    return merged;
  }

  /** A checkpoint was deleted: a merge ending in it has no final dump to come. */
  async forget(id: string): Promise<void> {
    const merged = await this.take(id);
    if (merged && typeof merged !== 'string') await merged.dispose();
  }

  /** Where a restore of `id` from a merge lays out its images. */
  restoreDirOf(id: string): string {
    return path.join(this.root, `${id}.restore`);
  }
}
