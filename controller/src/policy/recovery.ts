/**
 * Where a policy's checkpoints are copied, and what happens when a node is lost. Each checkpoint can be
 * copied to other nodes that could restore it (same runtime, CRIU at least as new, compatible CPU: the
 * migration preflight's check), least loaded first. When a node has not answered health checks for a
 * policy's `recovery.after`, each container that policy protects there is restored from its latest
 * checkpoint on a healthy node holding a copy. The lost node's copy of the container may still be running
 * (a network partition, not a crash): when the node answers again, it is stopped there (fenced) before
 * anything else happens to that node, so that one copy runs.
 */
import { checkCompatibility } from '../migration/preflight.js';
import type { NodeRegistry, PublicNode } from '../nodes.js';
import { type PolicyRepo, policyContainerKey } from '../store/policies.js';
import { compilePolicy } from './compile.js';
import { asPolicyError, policyError } from './errors.js';
import type { PolicyEvents } from './events.js';
import type { PolicyCheckpoint, PolicyRecovery } from './types.js';
import type { RuntimeName } from '../../../agent/src/runtimes/types.js';

export class PolicyPlacement {
  constructor(
    private readonly repo: PolicyRepo,
    private readonly nodes: NodeRegistry,
    private readonly events: PolicyEvents,
    private readonly now: () => number = Date.now,
  ) {}

  /** Up to `count` healthy nodes other than `source` that could restore its checkpoints of `runtime`, least loaded first. */
  replicaNodes(source: string, runtime: RuntimeName, count: number): string[] {
    if (count < 1) return [];
    const all = this.nodes.list();
    const sourceCaps = all.find((n) => n.name === source)?.capabilities;
    if (!sourceCaps) return [];
    return all
      .filter((n) => n.name !== source && n.healthy && n.capabilities && compatible(sourceCaps, n, runtime))
      .map((n) => n.name)
      .sort(leastLoadedFirst(this.repo.copiesPerNode()))
      .slice(0, count);
  }

  /** One health-check round's follow-up: fence what came back, then recover what is lost. */
  async afterHealthCheck(): Promise<void> {
    await this.fenceReturned();
    await this.recoverLost();
  }

  /** Containers restored elsewhere are stopped on their old node as soon as it answers. */
  private async fenceReturned(): Promise<void> {
    const healthy = new Set(
      this.nodes
        .list()
        .filter((n) => n.healthy)
        .map((n) => n.name),
    );
    for (const r of this.repo.pendingFences()) {
      if (!healthy.has(r.lostNode)) continue;
      try {
        await this.nodes.client(r.lostNode).removeContainer(r.runtime, r.lostContainerId);
        this.repo.saveRecovery({ ...r, fence: 'done', fencedAt: new Date(this.now()).toISOString() });
        this.events.emit(
          r.policy,
          'fenced',
          `${r.containerName} stopped on ${r.lostNode}, which answers again; it runs on ${r.targetNode}`,
          { ...r },
        );
      } catch {
        // Asked again after the next health check.
      }
    }
  }

  private async recoverLost(): Promise<void> {
    const now = this.now();
    const nodes = this.nodes.list();
    for (const p of this.repo.list()) {
      let after: number | undefined;
      try {
        after = p.spec.suspend ? undefined : compilePolicy(p.spec).recoverAfterMs;
      } catch {
        after = undefined;
      }
      if (after === undefined) continue;
      const lost = new Map(
        nodes.filter((n) => !n.healthy && now - Date.parse(n.lastSeen ?? n.registeredAt) >= (after as number)).map((n) => [n.name, n]),
      );
      if (!lost.size) continue;
      const latest = new Map<string, PolicyCheckpoint>();
      for (const c of this.repo.checkpoints(p.metadata.name, ['complete'])) if (!c.memoryOnly) latest.set(policyContainerKey(c), c);
      const done = new Map(this.repo.recoveries(p.metadata.name).map((r) => [r.id, r]));
      for (const c of latest.values()) {
        const node = lost.get(c.node);
        if (!node || done.get(recoveryId(c))?.status === 'restored') continue;
        await this.recoverOne(c, node, nodes, now);
      }
    }
  }

  private async recoverOne(c: PolicyCheckpoint, lostNode: PublicNode, nodes: PublicNode[], now: number): Promise<void> {
    const lostAt = Date.parse(lostNode.lastSeen ?? lostNode.registeredAt);
    const r: PolicyRecovery = {
      id: recoveryId(c),
      policy: c.policy,
      runtime: c.runtime,
      containerName: c.containerName,
      lostNode: lostNode.name,
      lostContainerId: c.containerId,
      checkpoint: c.id,
      checkpointTakenAt: c.createdAt,
      status: 'failed',
      at: new Date(now).toISOString(),
      lostWorkMs: Math.max(0, lostAt - Date.parse(c.createdAt)),
      fence: 'pending',
    };
    const targets = (c.copies ?? [])
      .filter((name) => nodes.some((n) => n.name === name && n.healthy))
      .sort(leastLoadedFirst(this.repo.copiesPerNode()));
    for (const target of targets) {
      try {
        await this.nodes.client(target).restore(c.id, { name: c.containerName });
        r.status = 'restored';
        r.targetNode = target;
        delete r.error;
        break;
      } catch (err) {
        r.error = asPolicyError(err, `restoring on ${target}`);
      }
    }
    if (!targets.length) {
      r.error = policyError('node_unreachable', `no healthy node holds a copy of ${c.id}`);
    }
    // Only a container running elsewhere is fenced: after a failed recovery the lost node's copy is the only one.
    if (r.status !== 'restored') r.fence = 'none';
    this.repo.saveRecovery(r);
    this.events.emit(
      r.policy,
      'recovered',
      r.status === 'restored'
        ? `${r.containerName} restored on ${r.targetNode} from ${r.checkpoint} (node ${r.lostNode} lost; ${Math.round(r.lostWorkMs / 1000)} s of work lost)`
        : `${r.containerName} of lost node ${r.lostNode} could not be restored: ${r.error?.message}`,
      { ...r },
    );
  }
}

/** Orders node names by how many copies they hold, then by name (a stable choice among equals). */
const leastLoadedFirst = (load: Map<string, number>) => (a: string, b: string) =>
  (load.get(a) ?? 0) - (load.get(b) ?? 0) || a.localeCompare(b);

/** One recovery per checkpoint: retried rounds update the same record. */
const recoveryId = (c: PolicyCheckpoint) => `rec-${c.id}`;

function compatible(source: NonNullable<PublicNode['capabilities']>, target: PublicNode, runtime: RuntimeName): boolean {
  try {
    checkCompatibility(source, target.capabilities as NonNullable<PublicNode['capabilities']>, runtime);
    return true;
  } catch {
    return false;
  }
}
