/**
 * A policy spec as the scheduler uses it: durations in ms, sizes in bytes, and the checks a JSON schema
 * cannot express (min <= max). Every error names the field as written in the document.
 */
import { FerryError } from '../../../agent/src/errors.js';
import type { ContainerInfo } from '../../../agent/src/runtimes/types.js';
import type { PolicySelector, PolicySpec } from './types.js';
import { type Cron, parseCron } from './cron.js';
import { parseDuration, parseSize } from './units.js';

export type CompiledSchedule =
  | { kind: 'cron'; cron: Cron; expression: string }
  | { kind: 'every'; everyMs: number }
  | { kind: 'adaptive'; mtbfMs: number; minMs: number; maxMs: number; formula: 'young' | 'daly' };

export interface CompiledPolicy {
  schedule: CompiledSchedule;
  retention: { keepLast?: number; maxAgeMs?: number; maxBytes?: number };
  leaveRunning: boolean;
  suspend: boolean;
  replicas: number;
  /** Incremental chains: a checkpoint without parent at least every `fullEvery` checkpoints of a container. */
  fullEvery?: number;
  /** How long a node may be silent before this policy's containers on it are restored elsewhere; absent: never. */
  recoverAfterMs?: number;
}

/** The shortest interval a policy may ask for: below it, checkpoints of one container would queue up. */
export const MIN_INTERVAL_MS = 1_000;

export function compilePolicy(spec: PolicySpec): CompiledPolicy {
  if (spec.coordinated && spec.selector.runtime === 'docker') {
    throw new FerryError(
      'unsupported',
      'spec.coordinated: docker containers cannot be held frozen while checkpointed (containerd refuses)',
      {
        hint: 'use an uncoordinated policy for docker containers',
        details: { field: 'spec.coordinated' },
      },
    );
  }
  if (!spec.selector.names && !spec.selector.labels) {
    // A policy that names nothing would checkpoint every container on every node.
    throw new FerryError('bad_request', 'spec.selector: say which containers, by names or by labels (or both)', {
      details: { field: 'spec.selector' },
    });
  }
  const s = spec.schedule;
  let schedule: CompiledSchedule;
  if ('cron' in s) {
    schedule = { kind: 'cron', cron: parseCron(s.cron), expression: s.cron };
  } else if ('every' in s) {
    schedule = { kind: 'every', everyMs: atLeastMinimum(parseDuration(s.every, 'spec.schedule.every'), 'spec.schedule.every') };
  } else {
    const a = s.adaptive;
    const minMs = atLeastMinimum(parseDuration(a.min, 'spec.schedule.adaptive.min'), 'spec.schedule.adaptive.min');
    const maxMs = parseDuration(a.max, 'spec.schedule.adaptive.max');
    if (maxMs < minMs) {
      throw new FerryError('bad_request', `spec.schedule.adaptive.max (${a.max}) is shorter than min (${a.min})`, {
        details: { field: 'spec.schedule.adaptive.max' },
      });
    }
    const mtbfMs = parseDuration(a.mtbf, 'spec.schedule.adaptive.mtbf');
    if (mtbfMs <= 0)
      throw new FerryError('bad_request', 'spec.schedule.adaptive.mtbf must be positive', {
        details: { field: 'spec.schedule.adaptive.mtbf' },
      });
    schedule = { kind: 'adaptive', mtbfMs, minMs, maxMs, formula: a.formula ?? 'daly' };
  }
  const r = spec.retention ?? {};
  const replicas = spec.storage?.replicas ?? 0;
  if (spec.recovery && replicas < 1) {
    throw new FerryError('bad_request', 'spec.recovery needs spec.storage.replicas >= 1: a lost node takes its own checkpoints with it', {
      hint: 'set storage: {replicas: 1}',
      details: { field: 'spec.recovery' },
    });
  }
  return {
    schedule,
    retention: {
      ...(r.keepLast !== undefined ? { keepLast: r.keepLast } : {}),
      ...(r.maxAge !== undefined ? { maxAgeMs: parseDuration(r.maxAge, 'spec.retention.maxAge') } : {}),
      ...(r.maxBytes !== undefined ? { maxBytes: parseSize(r.maxBytes, 'spec.retention.maxBytes') } : {}),
    },
    leaveRunning: spec.leaveRunning ?? true,
    suspend: spec.suspend ?? false,
    replicas,
    ...(spec.incremental ? { fullEvery: spec.incremental.fullEvery } : {}),
    ...(spec.recovery ? { recoverAfterMs: parseDuration(spec.recovery.after, 'spec.recovery.after') } : {}),
  };
}

function atLeastMinimum(ms: number, field: string): number {
  if (ms < MIN_INTERVAL_MS) {
    throw new FerryError('bad_request', `${field} is ${ms} ms; the shortest interval is ${MIN_INTERVAL_MS} ms`, { details: { field } });
  }
  return ms;
}

const globs = new Map<string, RegExp>();
/** Compiled once per pattern: selection runs for every container of every node on every run. */
function globToRegExp(glob: string): RegExp {
  let re = globs.get(glob);
  if (!re) {
    re = new RegExp(`^${glob.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replaceAll('*', '.*')}$`);
    globs.set(glob, re);
  }
  return re;
}

/** What containerd's CRI plugin writes on every container of a pod (OCI annotations, seen as labels). */
export const CRI = {
  namespace: 'io.kubernetes.cri.sandbox-namespace',
  pod: 'io.kubernetes.cri.sandbox-name',
  container: 'io.kubernetes.cri.container-name',
  type: 'io.kubernetes.cri.container-type',
} as const;

/** A pod's labels as the API server has them; undefined for a pod it does not list. */
export type PodLabelLookup = (namespace: string, pod: string) => Record<string, string> | undefined;

/**
 * Whether a running container on `node` is one the selector protects. A namespaced selector (a
 * CheckpointPolicy object in Kubernetes mode) sees only the application containers of pods in its own
 * namespace, never their sandboxes, and its names match pod names or the pods' container names: a
 * policy in one namespace cannot reach containers of another. Its labels are its pods' labels when the
 * API server's are at hand (podLabels), else the container's own.
 */
export function selects(selector: PolicySelector, node: string, c: ContainerInfo, podLabels?: PodLabelLookup): boolean {
  if (c.state !== 'running') return false;
  if (selector.nodes && !selector.nodes.includes(node)) return false;
  if (selector.runtime && selector.runtime !== c.runtime) return false;
  const names = selector.namespace ? podNamesOf(selector.namespace, c) : [c.name];
  if (!names) return false;
  if (selector.names && !selector.names.some((n) => names.some((name) => globToRegExp(n).test(name)))) return false;
  if (selector.labels) {
    const labels = selector.namespace && podLabels ? podLabels(selector.namespace, c.labels?.[CRI.pod] ?? '') : c.labels;
    if (!Object.entries(selector.labels).every(([k, v]) => labels?.[k] === v)) return false;
  }
  return true;
}

/** The names a namespaced selector matches a container by, or undefined when it is not an application container of that namespace. */
function podNamesOf(namespace: string, c: ContainerInfo): string[] | undefined {
  const l = c.labels ?? {};
  if (l[CRI.namespace] !== namespace || l[CRI.type] !== 'container') return undefined;
  return [l[CRI.pod], l[CRI.container]].filter((n): n is string => Boolean(n));
}
