/**
 * A pod moved to another node as a whole (Kubernetes mode; the API side is kube/pod-mover.ts):
 *
 * - preflight: the pod runs on a registered node and can be moved; its application containers are found on
 *   that node's agent by containerd's CRI annotations; the target is registered and another node.
 * - checkpoint: the pod's containers are held frozen together (one instant for all of them), and each is
 *   dumped leave-running: it stays frozen, so the source never stops and never moves on.
 * - transfer: each checkpoint goes to the target's agent.
 * - restore: the replacement pod is created pinned to the target, each container restoring its checkpoint,
 *   and followed until it runs and is Ready (readyTimeoutMs).
 * - verify: it still runs. cleanup: the source's hold ends in a kill (its processes never run again), the
 *   source pod is deleted, the restore annotations are taken off the replacement (a container restarted
 *   later starts afresh), and the checkpoints are deleted.
 *
 * Any failure before the replacement runs deletes the replacement and thaws the source, which was never
 * stopped: exactly one copy, the original, and it lost nothing. A replacement found running ends forward.
 */
import type { AgentClient } from '../../../agent/src/client.js';
import { FerryError, ignoring, isFerryError } from '../../../agent/src/errors.js';
import type { ContainerInfo } from '../../../agent/src/runtimes/types.js';
import type { PodMover } from '../kube/pod-mover.js';
import type { NodeRegistry } from '../nodes.js';
import { CRI } from '../policy/compile.js';
import type { MigrationEvent, MigrationRecord, PodMigrationRequest, PodMigrationState, Step } from './types.js';

/** Longer than any pod migration: an agent thaws a hold by itself after this, if the controller is gone. */
export const POD_HOLD_TTL_MS = 600_000;

/** The orchestrator's journal, as a pod migration uses it. */
export interface PodJournal {
  step<T>(step: Step, fn: () => Promise<T>): Promise<T>;
  emit(e: Omit<MigrationEvent, 'seq' | 'at'>): void;
  save(): void;
}

export interface PodMigrationContext {
  m: MigrationRecord & { pod: PodMigrationState };
  request: PodMigrationRequest;
  nodes: NodeRegistry;
  pods: PodMover;
  journal: PodJournal;
}

const elapsed = (since: number) => Math.round(performance.now() - since);

/** The application containers of a pod as the node's agent lists them, by container name. */
export async function podContainers(agent: AgentClient, namespace: string, pod: string): Promise<Map<string, ContainerInfo>> {
  const all = await agent.containers('runc');
  const ours = all.filter(
    (c) =>
      c.labels?.[CRI.namespace] === namespace &&
      c.labels?.[CRI.pod] === pod &&
      c.labels?.[CRI.type] === 'container' &&
      c.state === 'running',
  );
  return new Map(ours.map((c) => [c.labels?.[CRI.container] ?? '', c]));
}

export async function runPodMigration(ctx: PodMigrationContext): Promise<void> {
  const { m, request, nodes, pods, journal } = ctx;
  const p = m.pod;
  const source = nodes.client(m.source.node, m.id);
  const target = nodes.client(m.target.node, m.id);

  await journal.step('preflight', async () => {
    const found = await podContainers(source, p.namespace, p.name);
    const described = await pods.describe(p.namespace, p.name);
    const missing = described.containers.filter((c) => !found.has(c));
    if (missing.length) {
      throw new FerryError('container_not_found', `${missing.join(', ')} of ${p.namespace}/${p.name} not running on ${m.source.node}`, {
        hint: "the node's agent lists containerd's pod containers when its --runc-root is containerd's (the chart sets it)",
      });
    }
    await target.node();
    p.containers = described.containers.map((name, i) => ({
      name,
      id: (found.get(name) as ContainerInfo).id,
      checkpointId: `${m.checkpointId}-${i}`,
    }));
    journal.save();
  });

  let frozenAt = 0;
  await journal.step('checkpoint', async () => {
    frozenAt = performance.now();
    const hold = await source.hold({ containers: p.containers.map((c) => ({ runtime: 'runc', container: c.id })), ttlMs: POD_HOLD_TTL_MS });
    p.holdId = hold.id;
    journal.save();
    for (const c of p.containers) {
      const ck = await source.checkpoint({ runtime: 'runc', container: c.id, id: c.checkpointId, leaveRunning: true, transient: true });
      journal.emit({
        type: 'progress',
        step: 'checkpoint',
        message: `${c.name}: dumped ${ck.totalBytes} bytes`,
        data: { bytes: ck.totalBytes },
      });
    }
    m.figures.dumpMs = elapsed(frozenAt);
  });

  await journal.step('transfer', async () => {
    const t0 = performance.now();
    let bytes = 0;
    for (const c of p.containers) bytes += (await source.send(c.checkpointId, nodes.peer(m.target.node))).bytes;
    m.figures.transferMs = elapsed(t0);
    m.figures.bytesSent = bytes;
  });

  await journal.step('restore', async () => {
    const t0 = performance.now();
    const checkpoints = Object.fromEntries(p.containers.map((c) => [c.name, c.checkpointId]));
    await pods.createReplacement(p, p.replacement as string, m.target.node, checkpoints, m.id);
    journal.emit({
      type: 'progress',
      step: 'restore',
      message: `replacement pod ${p.namespace}/${p.replacement} created on ${m.target.node}`,
    });
    await pods.waitRunning(p.namespace, p.replacement as string, request.readyTimeoutMs);
    m.figures.restoreMs = elapsed(t0);
    m.figures.downtimeMs = elapsed(frozenAt);
  });

  await journal.step('verify', async () => {
    if ((await pods.readiness(p.namespace, p.replacement as string)) !== 'running') {
      throw new FerryError('runtime_failed', `${p.namespace}/${p.replacement} stopped running right after its restore`, {
        hint: `kubectl describe pod -n ${p.namespace} ${p.replacement}`,
      });
    }
  });

  await journal.step('cleanup', () => finishForward(ctx));
}

/** The replacement runs: the source dies without running again, and what the move needed goes. */
async function finishForward(ctx: PodMigrationContext): Promise<void> {
  const { m, nodes, pods, journal } = ctx;
  const p = m.pod;
  const source = nodes.client(m.source.node, m.id);
  const target = nodes.client(m.target.node, m.id);
  const leftovers: string[] = [];
  const attempt = (what: string, work: Promise<unknown>) =>
    work.catch((err: unknown) => leftovers.push(`${what}: ${(err as Error).message}`));
  // The pod goes first, so that kubelet restarts none of its containers once they die; then the hold ends
  // in a kill. A kill that fails never thaws (a container already stopped by kubelet is one reason), and
  // kubelet kills what is left of a deleted pod: the frozen source never runs again either way.
  await attempt(`source pod ${p.namespace}/${p.name}`, pods.delete(p.namespace, p.name));
  if (p.holdId)
    await attempt(
      `killing the frozen source on ${m.source.node}`,
      source.releaseHold(p.holdId, { kill: true }).catch(ignoring('not_found')),
    );
  await attempt(`restore annotations of ${p.replacement}`, pods.clearRestoreAnnotations(p.namespace, p.replacement as string));
  for (const c of p.containers) {
    await attempt(`${c.checkpointId} on ${m.source.node}`, source.deleteCheckpoint(c.checkpointId).catch(ignoring('checkpoint_not_found')));
    await attempt(`${c.checkpointId} on ${m.target.node}`, target.deleteCheckpoint(c.checkpointId).catch(ignoring('checkpoint_not_found')));
  }
  if (leftovers.length) journal.emit({ type: 'progress', step: 'cleanup', message: `left behind: ${leftovers.join('; ')}` });
}

/**
 * After a failure, a cancellation or a restart: a replacement that runs ends the migration forward;
 * otherwise it is deleted and the source thawed. Returns the outcome, and whether it ended forward.
 */
export async function settlePodMigration(ctx: PodMigrationContext): Promise<{ forward: boolean; outcome: string }> {
  const { m, nodes, pods } = ctx;
  const p = m.pod;
  if (p.replacement && (await pods.readiness(p.namespace, p.replacement)) === 'running') {
    await finishForward(ctx);
    return {
      forward: true,
      outcome: `not needed: ${p.namespace}/${p.replacement} runs on ${m.target.node}; the migration was finished forward`,
    };
  }
  const notes: string[] = [];
  if (p.replacement)
    await pods
      .delete(p.namespace, p.replacement)
      .catch((err: unknown) => notes.push(`deleting ${p.replacement}: ${(err as Error).message}`));
  const source = nodes.client(m.source.node, m.id);
  let outcome = `${p.namespace}/${p.name} kept running on ${m.source.node}`;
  if (p.holdId) {
    await source.releaseHold(p.holdId).then(
      () => {
        outcome = `${p.namespace}/${p.name} thawed on ${m.source.node}; it never stopped`;
      },
      (err: unknown) => {
        if (!(isFerryError(err) && err.code === 'not_found')) notes.push(`thawing on ${m.source.node}: ${(err as Error).message}`);
      },
    );
  }
  const target = nodes.client(m.target.node, m.id);
  for (const c of p.containers) {
    for (const [node, agent] of [
      [m.source.node, source],
      [m.target.node, target],
    ] as const) {
      await agent
        .deleteCheckpoint(c.checkpointId)
        .catch(ignoring('checkpoint_not_found'))
        .catch((err: unknown) => notes.push(`deleting ${c.checkpointId} on ${node}: ${(err as Error).message}`));
    }
  }
  return { forward: false, outcome: notes.length ? `${outcome}; ${notes.join('; ')}` : outcome };
}
