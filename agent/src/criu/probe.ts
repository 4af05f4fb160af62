/**
 * What this node can do, from real probes only: CRIU's own checks, the kernel, the CPU and each runtime.
 * The controller's preflight and the strategy choice for migration rest on these answers.
 */
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { execa } from 'execa';
import { probeLazyTransfer } from './lazy-probe.js';
import type { RuntimeDriver, RuntimeStatus } from '../runtimes/types.js';

export interface CriuCapabilities {
  available: boolean;
  version?: string;
  /** `criu check` output when it fails, to say why checkpoints cannot work here. */
  problem?: string;
  /** Soft-dirty tracking: pre-dump, incremental checkpoints and iterative pre-copy need it. */
  memDirtyTrack: boolean;
  /** A real lazy transfer works here (userfaultfd and CRIU's page server): post-copy migration needs it. */
  lazyPages: boolean;
  /** Why post-copy cannot work here, when it cannot. */
  lazyPagesProblem?: string;
}

export interface NodeCapabilities {
  node: string;
  arch: string;
  kernel: string;
  criu: CriuCapabilities;
  runtimes: RuntimeStatus[];
  /** CPU model and flags, for the compatibility check before restoring elsewhere. */
  cpu: { model: string; flags: string[] };
  probedAt: string;
}

async function criuSays(criu: string, args: string[]): Promise<{ ok: boolean; output: string }> {
  const r = await execa(criu, args, { reject: false, timeout: 30_000, all: true, stdin: 'ignore' });
  const output = String(r.all ?? '')
    .split('\n')
    .filter((l) => l && !l.includes('RLIMIT_NOFILE'))
    .join('\n');
  return { ok: r.exitCode === 0 && !r.failed, output };
}

export async function probeCriu(criu = 'criu'): Promise<CriuCapabilities> {
  const version = await criuSays(criu, ['--version']);
  if (!version.ok) {
    return {
      available: false,
      problem: `${criu} does not run (${version.output || 'not found'}); run scripts/setup-host.sh`,
      memDirtyTrack: false,
      lazyPages: false,
    };
  }
  const [check, dirty, uffd] = await Promise.all([
    criuSays(criu, ['check']),
    criuSays(criu, ['check', '--feature', 'mem_dirty_track']),
    criuSays(criu, ['check', '--feature', 'uffd-noncoop']),
  ]);
  const lazy = uffd.ok
    ? await probeLazyTransfer(criu)
    : { ok: false, problem: 'the kernel has no userfaultfd with non-cooperative events (criu check --feature uffd-noncoop)' };
  return {
    available: check.ok,
    version: /Version:\s*(\S+)/.exec(version.output)?.[1] ?? version.output.trim(),
    ...(check.ok ? {} : { problem: check.output.split('\n').slice(-5).join('\n') }),
    memDirtyTrack: dirty.ok,
    lazyPages: lazy.ok,
    ...(lazy.problem ? { lazyPagesProblem: lazy.problem } : {}),
  };
}

export async function probeCpu(): Promise<{ model: string; flags: string[] }> {
  const info = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(info)?.[1]?.trim() ?? '';
  return { model: field('model name'), flags: field('flags').split(/\s+/).filter(Boolean).sort() };
}

export async function probeNode(drivers: RuntimeDriver[], criu = 'criu', node = os.hostname()): Promise<NodeCapabilities> {
  const [criuCaps, cpu, runtimes] = await Promise.all([probeCriu(criu), probeCpu(), Promise.all(drivers.map((d) => d.status()))]);
  return { node, arch: os.arch(), kernel: os.release(), criu: criuCaps, runtimes, cpu, probedAt: new Date().toISOString() };
}
