/**
 * Holds a container still through its cgroup freezer, whatever runtime started it and whichever cgroup
 * version the host mounts. podman's leave-running export captures the rootfs after CRIU has let the container
 * go again, so a file the container grows in between no longer matches the size CRIU recorded and the restore
 * fails ("File tmp/count has bad size"). Frozen around the whole export, dump and rootfs are one state. CRIU
 * leaves a cgroup it found frozen frozen, so the caller thaws it once the archive is written.
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError, isFerryError } from '../errors.js';

const CGROUP_ROOT = '/sys/fs/cgroup';
/** The kernel settles a freeze in microseconds unless a task sits in an uninterruptible wait. */
const FREEZE_LIMIT_MS = 5_000;
const FREEZE_POLL_MS = 2;

interface Freezer {
  freeze(): Promise<void>;
  thaw(): Promise<void>;
  isFrozen(): Promise<boolean>;
  /** SIGKILL to every task in the cgroup; frozen, they die as they are thawed, before running anything. */
  kill(): Promise<void>;
}

/**
 * Thaws what holdFrozen froze. kill: every task is sent SIGKILL first, so that none runs another
 * instruction (a pod migrated away while held: its copy runs elsewhere now).
 */
export type Thaw = (opts?: { kill?: boolean }) => Promise<void>;

async function killAll(procsFile: string): Promise<void> {
  const pids = (await readFile(procsFile, 'utf8')).split('\n').filter(Boolean).map(Number);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }
}

/** Parses /proc/<pid>/cgroup into the freezer of the unified (v2) or the legacy (v1 freezer) hierarchy. */
export function freezerFromProcCgroup(procCgroup: string, root = CGROUP_ROOT): Freezer | undefined {
  const lines = procCgroup.split('\n').filter(Boolean);
  const v1 = lines.map((l) => l.split(':')).find(([, controllers]) => controllers?.split(',').includes('freezer'));
  if (v1?.[2]) {
    const dir = path.join(root, 'freezer', v1[2]);
    const state = path.join(dir, 'freezer.state');
    return {
      freeze: () => writeFile(state, 'FROZEN'),
      thaw: () => writeFile(state, 'THAWED'),
      isFrozen: async () => (await readFile(state, 'utf8')).trim() === 'FROZEN',
      kill: () => killAll(path.join(dir, 'cgroup.procs')),
    };
  }
  const unified = lines.map((l) => l.split(':')).find(([hierarchy, controllers]) => hierarchy === '0' && controllers === '');
  if (unified?.[2]) {
    const dir = path.join(root, unified[2]);
    return {
      freeze: () => writeFile(path.join(dir, 'cgroup.freeze'), '1'),
      thaw: () => writeFile(path.join(dir, 'cgroup.freeze'), '0'),
      isFrozen: async () => /^frozen 1$/m.test(await readFile(path.join(dir, 'cgroup.events'), 'utf8')),
      // cgroup.kill (5.14) reaches nested cgroups too; before it, the cgroup's own tasks.
      kill: () =>
        writeFile(path.join(dir, 'cgroup.kill'), '1').catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
          return killAll(path.join(dir, 'cgroup.procs'));
        }),
    };
  }
  return undefined;
}

/** Freezes the cgroup of `pid` and resolves once every task in it is frozen; returns the thaw. */
export async function holdFrozen(pid: number, name: string): Promise<Thaw> {
  const freezer = freezerFromProcCgroup(await readFile(`/proc/${pid}/cgroup`, 'utf8'));
  if (!freezer) {
    throw new FerryError('unsupported', `${name} has no cgroup freezer to hold it still during a leave-running checkpoint`, {
      hint: 'mount the cgroup freezer (v1) or use cgroup v2, or checkpoint without leaving it running',
    });
  }
  await freezer.freeze();
  const deadline = Date.now() + FREEZE_LIMIT_MS;
  // cgroup v1 reports FREEZING until the last task stops; there is no event to wait on, so it is polled.
  while (!(await freezer.isFrozen())) {
    if (Date.now() > deadline) {
      await freezer.thaw();
      throw new FerryError('runtime_failed', `${name} did not freeze within ${FREEZE_LIMIT_MS} ms; it was thawed again`, {
        hint: 'a task of the container is stuck in an uninterruptible wait (D state); retry when it is not',
      });
    }
    await sleep(FREEZE_POLL_MS);
  }
  return async (opts) => {
    if (opts?.kill) await freezer.kill();
    await freezer.thaw();
  };
}

/**
 * Freezes a container before a full dump and returns its thaw, for two reasons. A container that keeps
 * running would write to its files between the dump and the capture of its rootfs, and CRIU refuses to
 * restore an open file whose size changed: a leave-running checkpoint stays frozen until the rootfs is
 * captured, one consistent state. And CRIU, freezing a cgroup itself, looks whether the freeze is done only
 * every 100 ms (criu/seize.c), so nearly every dump held the container 100 ms longer than needed (stats:
 * freezing time 100.9 ms). Frozen here, polled every 2 ms, CRIU finds it frozen and starts at once: a runc
 * checkpoint went from about 220 to 115 ms, and a migration's downtime shrinks alike.
 *
 * A stopping dump only gains time from it: without a freezer it goes on unfrozen (CRIU then freezes by
 * itself), and its thaw, which lets the tasks CRIU killed go, has nothing to do once the runtime removed
 * the cgroup. Not for pre-dumps: CRIU keeps a cgroup it found frozen frozen while it writes the pages,
 * where on its own it thaws the container as soon as they are collected.
 */
export async function freezeBeforeDump(pid: number, name: string, leaveRunning: boolean): Promise<(() => Promise<void>) | undefined> {
  if (leaveRunning) return holdFrozen(pid, name);
  const thaw = await holdFrozen(pid, name).catch((err: unknown) => {
    if (isFerryError(err) && err.code === 'unsupported') return undefined;
    throw err;
  });
  return (
    thaw &&
    (() =>
      thaw().catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      }))
  );
}

/** Thaws the cgroup of `pid` (a hold left by an agent that was killed); a process without a freezer is left alone. */
export async function thawPid(pid: number): Promise<void> {
  await freezerFromProcCgroup(await readFile(`/proc/${pid}/cgroup`, 'utf8'))?.thaw();
}
