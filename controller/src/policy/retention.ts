/**
 * Which of one container's checkpoints a policy lets go. keepLast, maxAge and maxBytes each narrow the
 * kept set, newest first; the newest checkpoint is always kept (a policy never leaves a container with no
 * way back because it was suspended for longer than maxAge), and so is every parent a kept checkpoint
 * builds on. The result is ordered children first, the order in which an agent's store accepts deletes.
 */
export interface RetainedCheckpoint {
  id: string;
  createdAt: string;
  bytes: number;
  parent?: string;
  /** Memory only (a pre-dump): kept while a kept checkpoint builds on it, not counted by the rules. */
  memoryOnly?: boolean;
}

export interface RetentionRule {
  keepLast?: number;
  maxAgeMs?: number;
  maxBytes?: number;
}

export function checkpointsToDelete(all: RetainedCheckpoint[], rule: RetentionRule, now: number): string[] {
  const byId = new Map(all.map((c) => [c.id, c]));
  const newestFirst = [...all].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  const kept = new Set<string>();
  let bytes = 0;
  for (const [i, c] of newestFirst.filter((x) => !x.memoryOnly).entries()) {
    const needs = [...ancestry(c, byId)].filter((id) => !kept.has(id));
    const extra = needs.reduce((n, id) => n + (byId.get(id)?.bytes ?? 0), 0);
    const within =
      i === 0 ||
      ((rule.keepLast === undefined || i < rule.keepLast) &&
        (rule.maxAgeMs === undefined || now - Date.parse(c.createdAt) <= rule.maxAgeMs) &&
        (rule.maxBytes === undefined || bytes + extra <= rule.maxBytes));
    // Newest first: once one is out, every older one is out too, or "keep last 3" could keep 1, 2 and 5.
    if (!within) break;
    for (const id of needs) kept.add(id);
    bytes += extra;
  }
  return newestFirst.filter((c) => !kept.has(c.id)).map((c) => c.id);
}

/** The checkpoint and every parent it needs that is still known. */
function* ancestry(c: RetainedCheckpoint, byId: Map<string, RetainedCheckpoint>): Generator<string> {
  const seen = new Set<string>();
  for (let cur: RetainedCheckpoint | undefined = c; cur && !seen.has(cur.id); cur = cur.parent ? byId.get(cur.parent) : undefined) {
    seen.add(cur.id);
    yield cur.id;
  }
}
