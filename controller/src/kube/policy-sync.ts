/**
 * Kubernetes mode for checkpoint policies: CheckpointPolicy objects, watched through an informer, drive the
 * same scheduler the REST API drives in standalone mode, and get its status back through the status
 * subresource with conditions. Each reconcile is idempotent and reads nothing but the informer's cache and
 * the scheduler, so a controller that restarts (or a new leader) picks up where the last one stopped.
 *
 * - A policy `name` in namespace `ns` is the scheduler's `ns.name` (dots cannot occur in either, so the
 *   two never collide, nor with standalone names), selecting containers of that namespace only.
 * - A finalizer keeps a deleted policy until its stored checkpoints are deleted on every node.
 * - A spec the controller refuses (what CEL cannot check, e.g. adaptive min above max) leaves the last
 *   accepted spec scheduled and says so: Degraded=True, reason InvalidSpec, the message naming the field.
 */
import { CustomObjectsApi, type KubeConfig, type KubernetesObject, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { isDeepStrictEqual } from 'node:util';
import { isFerryError } from '../../../agent/src/errors.js';
import type { PolicyEvents } from '../policy/events.js';
import type { PolicyScheduler } from '../policy/scheduler.js';
import type { PolicySpec, PolicyStatus } from '../policy/types.js';
import { CRD_GROUP, CRD_VERSION, POLICY_PLURAL } from './crd.js';
import { EventRecorder, type EventTarget, kubeEventFor } from './events.js';
import { ResilientInformer } from './informer.js';
import { WorkQueue } from './workqueue.js';

export const POLICY_FINALIZER = 'ferry.dev/checkpoints';

export interface Condition {
  type: 'Ready' | 'Progressing' | 'Degraded';
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  observedGeneration: number;
  lastTransitionTime: string;
}

type KubeStatus = Partial<PolicyStatus> & { observedGeneration?: number; conditions?: Condition[] };

export interface PolicyObject extends KubernetesObject {
  metadata: {
    name: string;
    namespace: string;
    uid?: string;
    generation?: number;
    resourceVersion?: string;
    finalizers?: string[];
    deletionTimestamp?: Date;
  };
  spec: PolicySpec;
  status?: KubeStatus;
}

export const internalName = (namespace: string, name: string) => `${namespace}.${name}`;

export interface PolicySyncOptions {
  kubeConfig: KubeConfig;
  policies: PolicyScheduler;
  events: PolicyEvents;
  queueBaseDelayMs?: number;
  /** First wait before the watch is started again after an error; it doubles up to 30 s. */
  watchRetryMs?: number;
  onError?: (key: string, err: unknown) => void;
}

export class PolicySync {
  private readonly api: CustomObjectsApi;
  private readonly watched: ResilientInformer<PolicyObject>;
  private readonly queue: WorkQueue;
  private readonly recorder: EventRecorder;
  /** Scheduler events of each policy, so that its status follows its runs. */
  private readonly followed = new Map<string, () => void>();

  constructor(private readonly opts: PolicySyncOptions) {
    this.api = opts.kubeConfig.makeApiClient(CustomObjectsApi);
    this.recorder = new EventRecorder(opts.kubeConfig, (err) => opts.onError?.('events', err));
    const path = `/apis/${CRD_GROUP}/${CRD_VERSION}/${POLICY_PLURAL}`;
    this.watched = new ResilientInformer<PolicyObject>(
      opts.kubeConfig,
      path,
      () => this.api.listClusterCustomObject({ group: CRD_GROUP, version: CRD_VERSION, plural: POLICY_PLURAL }) as never,
      { ...(opts.watchRetryMs ? { retryMs: opts.watchRetryMs } : {}), onError: (err) => opts.onError?.('informer', err) },
    );
    this.queue = new WorkQueue((key) => this.reconcile(key), {
      ...(opts.queueBaseDelayMs ? { baseDelayMs: opts.queueBaseDelayMs } : {}),
      onError: (key, err) => opts.onError?.(key, err),
    });
    const enqueue = (o: PolicyObject) => this.queue.add(`${o.metadata.namespace}/${o.metadata.name}`);
    this.watched.informer.on('add', enqueue);
    this.watched.informer.on('update', enqueue);
    this.watched.informer.on('delete', enqueue);
  }

  async start(): Promise<void> {
    await this.watched.start();
  }

  async stop(): Promise<void> {
    await this.watched.stop();
    await this.queue.stop();
    for (const off of this.followed.values()) off();
    this.followed.clear();
  }

  /** A CheckpointPolicy object as the informer has it (for owner references). */
  policyObject(namespace: string, name: string): PolicyObject | undefined {
    return this.watched.informer.get(name, namespace);
  }

  /** Resolves when every change seen so far is reconciled. */
  settled(): Promise<void> {
    return this.queue.idle();
  }

  async reconcile(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const internal = internalName(namespace, name);
    const obj = this.watched.informer.get(name, namespace);
    if (!obj) {
      // Gone without our finalizer (created while no controller ran, and deleted since): forget it.
      await this.forget(internal);
      return;
    }
    if (obj.metadata.deletionTimestamp) {
      await this.finalize(obj, internal);
      return;
    }
    if (!obj.metadata.finalizers?.includes(POLICY_FINALIZER)) {
      await this.patch(obj, {
        metadata: { finalizers: [...(obj.metadata.finalizers ?? []), POLICY_FINALIZER], resourceVersion: obj.metadata.resourceVersion },
      });
      return; // the update comes back through the informer and is reconciled then
    }
    const generation = obj.metadata.generation ?? 1;
    // A generation seen for the first time gets one event saying whether its spec was taken.
    const news = obj.status?.observedGeneration !== generation;
    let status: KubeStatus;
    try {
      const { policy } = this.opts.policies.apply({
        metadata: { name: internal },
        spec: { ...obj.spec, selector: { ...obj.spec.selector, namespace } },
      });
      this.follow(internal, key);
      status = {
        ...policy.status,
        observedGeneration: generation,
        conditions: conditionsFor(policy.status, generation, obj.status?.conditions),
      };
      if (news) void this.recorder.record(target(obj), 'Normal', 'Applied', `generation ${generation}: ${policy.status.interval.reason}`);
    } catch (err) {
      if (!isFerryError(err)) throw err;
      const field = typeof err.details?.field === 'string' ? err.details.field : 'spec';
      if (news) void this.recorder.record(target(obj), 'Warning', 'InvalidSpec', `generation ${generation}: ${err.message}`);
      status = {
        ...(obj.status ?? {}),
        observedGeneration: generation,
        conditions: mergeConditions(obj.status?.conditions, generation, [
          { type: 'Ready', status: 'False', reason: 'InvalidSpec', message: `${field}: ${err.message}` },
          { type: 'Degraded', status: 'True', reason: 'InvalidSpec', message: `${err.message}; the last accepted spec stays in force` },
          { type: 'Progressing', status: 'False', reason: 'InvalidSpec', message: 'waiting for a spec the controller accepts' },
        ]),
      };
    }
    // An unchanged status is not written: the write would come back as an update, and loop. Compared as
    // values: the API server returns keys in its own order, and drops those without a value.
    if (isDeepStrictEqual(JSON.parse(JSON.stringify(status)), obj.status ?? {})) return;
    await this.api.replaceNamespacedCustomObjectStatus({
      group: CRD_GROUP,
      version: CRD_VERSION,
      namespace,
      plural: POLICY_PLURAL,
      name,
      body: { ...obj, status },
    });
  }

  private async finalize(obj: PolicyObject, internal: string): Promise<void> {
    if (!obj.metadata.finalizers?.includes(POLICY_FINALIZER)) return;
    const left = await this.forget(internal);
    if (left.length) {
      throw new Error(`checkpoints of ${internal} not yet deleted: ${left.map((l) => `${l.id} on ${l.node} (${l.error})`).join(', ')}`);
    }
    await this.patch(obj, {
      metadata: {
        finalizers: (obj.metadata.finalizers ?? []).filter((f) => f !== POLICY_FINALIZER),
        resourceVersion: obj.metadata.resourceVersion,
      },
    });
  }

  /** Removes the policy from the scheduler, deleting its stored checkpoints; returns those left behind. */
  private async forget(internal: string): Promise<{ id: string; node: string; error: string }[]> {
    this.followed.get(internal)?.();
    this.followed.delete(internal);
    if (!this.opts.policies.list().some((p) => p.metadata.name === internal)) return [];
    return (await this.opts.policies.remove(internal)).left;
  }

  /** Status follows the policy's runs; what goes wrong in them is also told as an event on the object. */
  private follow(internal: string, key: string): void {
    if (this.followed.has(internal)) return;
    const [namespace, name] = key.split('/') as [string, string];
    this.followed.set(
      internal,
      this.opts.events.subscribe(internal, (e) => {
        this.queue.add(key);
        const kind = kubeEventFor(e);
        const obj = this.watched.informer.get(name, namespace);
        if (kind && obj) void this.recorder.record(target(obj), kind.type, kind.reason, e.message);
      }),
    );
  }

  private async patch(obj: PolicyObject, body: object): Promise<void> {
    await this.api.patchNamespacedCustomObject(
      { group: CRD_GROUP, version: CRD_VERSION, namespace: obj.metadata.namespace, plural: POLICY_PLURAL, name: obj.metadata.name, body },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }
}

const target = (o: PolicyObject): EventTarget => ({
  apiVersion: `${CRD_GROUP}/${CRD_VERSION}`,
  kind: 'CheckpointPolicy',
  name: o.metadata.name,
  namespace: o.metadata.namespace,
  ...(o.metadata.uid ? { uid: o.metadata.uid } : {}),
});

/** Ready, Progressing and Degraded from the scheduler's status of the policy. */
export function conditionsFor(s: PolicyStatus, generation: number, previous: Condition[] | undefined): Condition[] {
  const failing = s.phase === 'Failing';
  return mergeConditions(previous, generation, [
    s.phase === 'Suspended'
      ? { type: 'Ready', status: 'False', reason: 'Suspended', message: 'spec.suspend is true: nothing is checkpointed' }
      : {
          type: 'Ready',
          status: 'True',
          reason: 'Scheduled',
          message: `every ${Math.round(s.interval.ms / 1000)} s: ${s.interval.reason}`,
        },
    s.nextRunAt
      ? { type: 'Progressing', status: 'True', reason: 'Scheduled', message: `next run at ${s.nextRunAt}` }
      : { type: 'Progressing', status: 'False', reason: 'Idle', message: 'no run is scheduled' },
    failing
      ? {
          type: 'Degraded',
          status: 'True',
          reason: 'CheckpointFailing',
          message: `${s.consecutiveFailures} runs in a row failed; last: ${s.lastError?.message ?? 'unknown'}`,
        }
      : {
          type: 'Degraded',
          status: 'False',
          reason: 'Healthy',
          message: s.lastSuccessAt ? `last success at ${s.lastSuccessAt}` : 'no run yet',
        },
  ]);
}

/** New conditions keep their lastTransitionTime while their status stays the same, as Kubernetes expects. */
function mergeConditions(
  previous: Condition[] | undefined,
  generation: number,
  next: Omit<Condition, 'observedGeneration' | 'lastTransitionTime'>[],
): Condition[] {
  const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  return next.map((c) => {
    const before = previous?.find((p) => p.type === c.type);
    return { ...c, observedGeneration: generation, lastTransitionTime: before?.status === c.status ? before.lastTransitionTime : now };
  });
}
