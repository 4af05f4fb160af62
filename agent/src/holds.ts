/**
 * Holds for coordinated checkpoints: a group of containers frozen together, so that checkpoints taken
 * one after another all show the same instant (a consistent cut: none has moved on, none has received
 * anything another has not yet sent). A checkpoint of a held container leaves it frozen; the hold's release
 * thaws the group together. A hold expires by itself, so a controller that dies mid-cut cannot leave
 * workloads frozen; and the held containers are written to a file, so an agent killed while holding them
 * thaws them when it starts again. Containers being dumped are written there too: a dump freezes its
 * container (freezer.ts, or CRIU itself), and an agent killed mid-dump would otherwise leave it frozen for good.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { FerryError } from './errors.js';
import type { Thaw } from './runtimes/freezer.js';
import type { ContainerInfo, RuntimeDriver, RuntimeName } from './runtimes/types.js';

export interface HeldContainer {
  runtime: RuntimeName;
  id: string;
  name: string;
}

export interface Hold {
  id: string;
  containers: HeldContainer[];
  frozenAt: string;
  expiresAt: string;
}

interface ActiveHold {
  hold: Hold;
  thaws: Thaw[];
  timer: NodeJS.Timeout;
}

const keyOf = (runtime: RuntimeName, id: string) => `${runtime}/${id}`;

export class HoldRegistry {
  private readonly active = new Map<string, ActiveHold>();
  private readonly dumping = new Map<string, HeldContainer>();

  /** `file`: where the held containers are recorded; without it, holds die with the process. */
  constructor(private readonly file?: string) {}

  /** Thaws what an earlier run of the agent held when it died; `thaw` gets each recorded container. */
  async recover(thaw: (c: HeldContainer) => Promise<void>): Promise<HeldContainer[]> {
    if (!this.file) return [];
    const raw = await readFile(this.file, 'utf8').catch(() => undefined);
    const left = raw ? (JSON.parse(raw) as HeldContainer[]) : [];
    await Promise.allSettled(left.map(thaw));
    await rm(this.file, { force: true });
    return left;
  }

  private async record(): Promise<void> {
    if (!this.file) return;
    const held = [...this.active.values()].flatMap((a) => a.hold.containers).concat([...this.dumping.values()]);
    if (held.length) await writeFile(this.file, JSON.stringify(held), { flush: true });
    else await rm(this.file, { force: true });
  }

  /** Freezes every container or none: if one cannot be frozen, those already frozen are thawed. */
  async hold(targets: { driver: RuntimeDriver; container: ContainerInfo }[], ttlMs: number): Promise<Hold> {
    for (const { driver, container } of targets) {
      if (!driver.freeze) {
        throw new FerryError('unsupported', `${driver.name} containers cannot be held frozen for a coordinated checkpoint`, {
          hint:
            driver.name === 'docker'
              ? 'containerd refuses to checkpoint a frozen container; protect docker containers with uncoordinated policies'
              : 'use runc or podman',
          details: { container: container.name },
        });
      }
      if (this.isHeld(driver.name, container.id)) {
        throw new FerryError('conflict', `${container.name} is already held frozen by another coordinated checkpoint`, {
          hint: 'wait for that checkpoint to finish',
        });
      }
    }
    const thaws: Thaw[] = [];
    try {
      for (const { driver, container } of targets) thaws.push(await (driver.freeze as NonNullable<RuntimeDriver['freeze']>)(container));
    } catch (err) {
      await Promise.allSettled(thaws.map((thaw) => thaw()));
      throw err;
    }
    const now = Date.now();
    const hold: Hold = {
      id: `h-${now.toString(36)}-${randomBytes(3).toString('hex')}`,
      containers: targets.map(({ driver, container }) => ({ runtime: driver.name, id: container.id, name: container.name })),
      frozenAt: new Date(now).toISOString(),
      expiresAt: new Date(now + ttlMs).toISOString(),
    };
    const timer = setTimeout(() => void this.release(hold.id).catch(() => undefined), ttlMs);
    timer.unref();
    this.active.set(hold.id, { hold, thaws, timer });
    await this.record();
    return hold;
  }

  /** Runs a dump of `c` with it recorded, so that a restart after a kill mid-dump thaws it (see above). */
  async whileDumping<T>(c: HeldContainer, dump: () => Promise<T>): Promise<T> {
    const key = keyOf(c.runtime, c.id);
    this.dumping.set(key, c);
    try {
      await this.record();
      return await dump();
    } finally {
      this.dumping.delete(key);
      await this.record();
    }
  }

  isHeld(runtime: RuntimeName, containerId: string): boolean {
    const key = keyOf(runtime, containerId);
    return [...this.active.values()].some((a) => a.hold.containers.some((c) => keyOf(c.runtime, c.id) === key));
  }

  /**
   * Thaws the group; every thaw is tried even when one fails. kill: the held containers' tasks are killed
   * first and never run again (a pod migration's source, once its copy runs elsewhere).
   */
  async release(id: string, opts: { kill?: boolean } = {}): Promise<Hold> {
    const a = this.active.get(id);
    if (!a) {
      throw new FerryError('not_found', `no hold ${id} on this node (released already, or expired)`, {
        hint: 'holds expire after their ttlMs; nothing is frozen by it any more',
      });
    }
    this.active.delete(id);
    clearTimeout(a.timer);
    await this.record();
    const failed = (await Promise.allSettled(a.thaws.map((thaw) => thaw(opts)))).filter((r) => r.status === 'rejected');
    if (failed.length) {
      throw new FerryError(
        'runtime_failed',
        `${failed.length} container(s) of hold ${id} could not be thawed: ${String((failed[0] as PromiseRejectedResult).reason)}`,
        {
          hint: 'thaw them by hand (runc resume / cgroup.freeze = 0) and check the node',
        },
      );
    }
    return a.hold;
  }

  async releaseAll(): Promise<void> {
    await Promise.allSettled([...this.active.keys()].map((id) => this.release(id)));
  }
}
