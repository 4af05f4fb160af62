/**
 * Before anything moves: can the target run what the source runs, and which strategy is possible here.
 * Everything is decided from the capabilities the agents probed, never assumed.
 */
import type { NodeCapabilities } from '../../../agent/src/criu/probe.js';
import { FerryError } from '../../../agent/src/errors.js';
import type { RuntimeName } from '../../../agent/src/runtimes/types.js';
import type { MemoryLoad, MigrationRecord, Strategy } from './types.js';

/**
 * CPU flags that change what user space may execute. A process restored where one of these is missing
 * can die on its next instruction; the rest of /proc/cpuinfo's flags (bugs, power management) do not matter.
 */
const USER_VISIBLE_FLAGS =
  /^(sse\d?(_\d)?|ssse3|avx.*|fma|f16c|aes|pclmulqdq|sha_ni|bmi[12]|adx|popcnt|movbe|lzcnt|abm|rdrand|rdseed|xsave.*|erms|fsrm|clflushopt|clwb|vaes|vpclmulqdq|gfni|amx.*|pku|ospke|umip|rtm|hle|mpx|x2apic|lm|nx|cx16|cx8)$/;

export function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  const pb = b.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d) return Math.sign(d);
  }
  return 0;
}

/** Throws incompatible_nodes naming every problem at once, so one fix round is enough. */
export function checkCompatibility(source: NodeCapabilities, target: NodeCapabilities, runtime: RuntimeName): void {
  const problems: string[] = [];
  if (!source.criu.available) problems.push(`CRIU does not work on ${source.node}: ${source.criu.problem ?? 'unknown'}`);
  if (!target.criu.available) problems.push(`CRIU does not work on ${target.node}: ${target.criu.problem ?? 'unknown'}`);
  if (source.criu.version && target.criu.version && compareVersions(target.criu.version, source.criu.version) < 0) {
    problems.push(`CRIU on ${target.node} (${target.criu.version}) is older than on ${source.node} (${source.criu.version})`);
  }
  if (source.arch !== target.arch) problems.push(`architectures differ: ${source.arch} vs ${target.arch}`);
  const targetFlags = new Set(target.cpu.flags);
  const missing = source.cpu.flags.filter((f) => USER_VISIBLE_FLAGS.test(f) && !targetFlags.has(f));
  if (missing.length) problems.push(`${target.node}'s CPU lacks ${missing.join(', ')}, which ${source.node}'s processes may use`);
  const rt = target.runtimes.find((r) => r.runtime === runtime);
  if (!rt?.available) problems.push(`${runtime} is not available on ${target.node}${rt?.reason ? `: ${rt.reason}` : ''}`);
  if (problems.length) {
    throw new FerryError('incompatible_nodes', `cannot migrate from ${source.node} to ${target.node}: ${problems.join('; ')}`, {
      hint: 'fix the target node (scripts/setup-host.sh) or choose another target',
      details: { problems },
    });
  }
}

/** Which strategy runs, and why, given what was asked and what the source can do. */
export function chooseStrategy(
  requested: Strategy,
  source: NodeCapabilities,
  runtime: RuntimeName,
  target?: NodeCapabilities,
): NonNullable<MigrationRecord['strategy']> {
  if (requested === 'stopcopy') return { requested, used: 'stopcopy', reason: 'requested' };
  if (requested === 'postcopy' || requested === 'hybrid') {
    const without = [source, target].filter((n): n is NodeCapabilities => Boolean(n && !n.criu.lazyPages));
    if (runtime !== 'runc' || without.length) {
      throw new FerryError(
        'incompatible_nodes',
        runtime !== 'runc'
          ? `${requested} needs runc: ${runtime} has no lazy restore`
          : `${requested} needs CRIU's lazy pages, which do not work on ${without
              .map((n) => `${n.node} (${n.criu.lazyPagesProblem ?? 'no userfaultfd'})`)
              .join(' and ')}`,
        { hint: "use strategy 'auto' or 'stopcopy'", details: { field: 'strategy' } },
      );
    }
    if (requested === 'hybrid') {
      if (!source.criu.memDirtyTrack) {
        throw new FerryError('incompatible_nodes', `hybrid needs pre-copy rounds, and ${source.node} does not track dirty memory`, {
          hint: "use strategy 'postcopy' or 'stopcopy'",
          details: { field: 'strategy' },
        });
      }
      return {
        requested,
        used: 'hybrid',
        reason:
          'requested: pre-copy rounds while the container runs, then a lazy final dump: the last delta follows on demand instead of during the downtime',
      };
    }
    return {
      requested,
      used: 'postcopy',
      reason:
        'requested: the container is frozen only while everything but memory moves; memory follows on demand from the source, which the workload needs until the last page has arrived',
    };
  }
  if (!source.criu.memDirtyTrack) {
    return {
      requested,
      used: 'stopcopy',
      reason: `no memory tracking on ${source.node} (criu check --feature mem_dirty_track fails: the kernel lacks soft-dirty bits), so pre-copy rounds cannot find dirtied pages`,
    };
  }
  if (runtime === 'docker') {
    return {
      requested,
      used: 'stopcopy',
      reason: 'the Docker Engine API has no pre-dump, so pre-copy rounds are impossible through docker',
    };
  }
  if (runtime === 'podman') {
    return {
      requested,
      used: 'precopy',
      reason: `${source.node} tracks dirty memory; podman keeps one pre-checkpoint per container, so one round, then the final dump on top of it`,
    };
  }
  return {
    requested,
    used: 'precopy',
    reason: `${source.node} tracks dirty memory (mem_dirty_track), so rounds re-send only what changed`,
  };
}

/**
 * Below this much memory a restore copies it in quicker than a lazy-pages daemon starts (measured in the
 * lab: 1 GiB restored eagerly in 1.4 s, lazily in 0.3 s plus 0.26 s for the daemon; docs/migration.md).
 */
export const LAZY_LOAD_MIN_BYTES = 256 * 2 ** 20;

type MemoryLoadChoice = NonNullable<MigrationRecord['memoryLoad']>;

/**
 * How the target loads the container's memory on restore, decided in preflight: eagerly (CRIU copies
 * all of it in before the process resumes), or lazily from the target's own images (the process resumes
 * at once and a lazy-pages daemon loads the rest behind it: the copy leaves the downtime). Lazy needs
 * runc and userfaultfd on the target; post-copy already loads lazily, from the source, so it has none.
 * 'auto' picks lazy where it can, and sizedMemoryLoad takes it back for small memory.
 */
export function chooseMemoryLoad(
  requested: MemoryLoad,
  strategy: Exclude<Strategy, 'auto'>,
  runtime: RuntimeName,
  target: NodeCapabilities,
): MemoryLoadChoice | undefined {
  const refuse = (why: string) =>
    new FerryError('incompatible_nodes', `memoryLoad lazy: ${why}`, {
      hint: "use memoryLoad 'auto' or 'eager'",
      details: { field: 'memoryLoad' },
    });
  if (strategy === 'postcopy' || strategy === 'hybrid') {
    if (requested === 'lazy') throw refuse(`${strategy} already loads memory lazily, from the source`);
    return undefined;
  }
  if (requested === 'eager') return { requested, used: 'eager', reason: 'requested' };
  const impossible =
    runtime !== 'runc'
      ? `${runtime} restores all memory before the container resumes`
      : !target.criu.lazyPages
        ? `${target.node} has no lazy pages (${target.criu.lazyPagesProblem ?? 'no userfaultfd'})`
        : undefined;
  if (impossible && requested === 'lazy') throw refuse(impossible);
  if (impossible) return { requested, used: 'eager', reason: impossible };
  return {
    requested,
    used: 'lazy',
    reason:
      requested === 'lazy'
        ? "requested: the container resumes before its memory is in; a lazy-pages daemon loads it from the target's images"
        : `${target.node} loads memory lazily from its own images when the container holds at least ${LAZY_LOAD_MIN_BYTES / 2 ** 20} MiB: the copy leaves the downtime`,
  };
}

/**
 * 'auto' goes back to eager where lazy would not pay, known once the final dump has been taken: a small
 * memory. A final dump on pre-copy rounds stays lazy: the target merges the rounds as they arrive, so
 * that all of memory can load lazily (agent/src/criu/merged-rounds.ts; CRIU itself restores pages left in
 * parent images eagerly even with lazy pages).
 */
export function sizedMemoryLoad(choice: MemoryLoadChoice | undefined, dump: { memoryBytes: number }): MemoryLoadChoice | undefined {
  if (choice?.requested !== 'auto' || choice.used !== 'lazy') return choice;
  if (dump.memoryBytes >= LAZY_LOAD_MIN_BYTES) return choice;
  return {
    requested: 'auto',
    used: 'eager',
    reason: `${Math.round(dump.memoryBytes / 2 ** 20)} MiB of memory: copied in quicker than a lazy-pages daemon starts (lazy from ${LAZY_LOAD_MIN_BYTES / 2 ** 20} MiB)`,
  };
}
