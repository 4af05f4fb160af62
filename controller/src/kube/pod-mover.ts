/**
 * What a pod migration asks of the API server (the agents' part is in migration/pod-migration.ts): the pod
 * described and checked, the replacement pod created pinned to the target node on Ferry's RuntimeClass
 * with one `ferry.dev/restore-from.<container>` annotation per container, followed until it runs, and the
 * source pod deleted. kubelet passes a pod's annotations to its sandbox; containerd's pod_annotations hands
 * them to each container's spec, where ferry-runc finds its checkpoint (docs/kubernetes.md).
 */
import { CoreV1Api, type KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod, Watch } from '@kubernetes/client-node';
import { FerryError } from '../../../agent/src/errors.js';

export const RESTORE_ANNOTATION = 'ferry.dev/restore-from';
export const MIGRATION_ANNOTATION = 'ferry.dev/migration';

export interface DescribedPod {
  uid: string;
  node: string;
  /** The application containers, by name, in the pod's order. */
  containers: string[];
}

export type PodReadiness = 'running' | 'pending' | 'failed' | 'absent';

export class PodMover {
  private readonly core: CoreV1Api;

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly runtimeClass: string,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
  }

  /** The pod, if it can be moved: running on a node, not managed by a controller, one PID namespace per container. */
  async describe(namespace: string, name: string): Promise<DescribedPod> {
    const pod = await this.read(namespace, name);
    if (!pod) {
      throw new FerryError('pod_not_found', `no pod ${namespace}/${name}`, {
        hint: 'kubectl get pods -n ' + namespace,
        details: { field: 'pod' },
      });
    }
    const owner = pod.metadata?.ownerReferences?.find((o) => o.controller);
    if (owner) {
      throw new FerryError('unsupported', `${namespace}/${name} is managed by ${owner.kind} ${owner.name}, which would replace it`, {
        hint: 'migrate bare pods; for a StatefulSet follow the pattern in docs/kubernetes.md',
        details: { field: 'pod' },
      });
    }
    if (pod.spec?.shareProcessNamespace) {
      throw new FerryError('unsupported', `${namespace}/${name} shares one process namespace between its containers`, {
        hint: 'CRIU gives processes back their PIDs, which would collide in the new sandbox',
        details: { field: 'pod' },
      });
    }
    const node = pod.spec?.nodeName;
    if (pod.status?.phase !== 'Running' || !node) {
      throw new FerryError('container_not_running', `${namespace}/${name} is ${pod.status?.phase ?? 'not scheduled'}, not Running`, {
        hint: 'only a running pod can be migrated',
        details: { field: 'pod' },
      });
    }
    return { uid: pod.metadata?.uid ?? '', node, containers: (pod.spec?.containers ?? []).map((c) => c.name) };
  }

  /** Deterministic, so that a restarted controller finds the replacement it may have created. */
  replacementName(name: string, migrationId: string): string {
    const suffix = `-${migrationId.slice(-6)}`;
    return `${name.slice(0, 63 - suffix.length).replace(/[-.]+$/, '')}${suffix}`;
  }

  /**
   * The replacement: the source pod's labels (Services find it), annotations and spec, on the target node
   * and Ferry's RuntimeClass, each container restoring its checkpoint. Created once: an existing pod of
   * that name from this migration is taken as it is.
   */
  async createReplacement(
    source: { namespace: string; name: string },
    replacement: string,
    targetNode: string,
    checkpoints: Record<string, string>,
    migrationId: string,
  ): Promise<void> {
    const pod = await this.read(source.namespace, source.name);
    if (!pod) throw new FerryError('pod_not_found', `the source pod ${source.namespace}/${source.name} is gone`);
    const annotations = Object.fromEntries(
      Object.entries(pod.metadata?.annotations ?? {}).filter(([k]) => !k.startsWith(RESTORE_ANNOTATION) && k !== MIGRATION_ANNOTATION),
    );
    for (const [container, checkpoint] of Object.entries(checkpoints)) annotations[`${RESTORE_ANNOTATION}.${container}`] = checkpoint;
    annotations[MIGRATION_ANNOTATION] = migrationId;
    const body: V1Pod = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: replacement, namespace: source.namespace, labels: pod.metadata?.labels ?? {}, annotations },
      spec: { ...(pod.spec as NonNullable<V1Pod['spec']>), nodeName: targetNode, runtimeClassName: this.runtimeClass },
    };
    await this.core.createNamespacedPod({ namespace: source.namespace, body }).catch(async (err: { code?: number }) => {
      if (err.code !== 409) throw err;
      const existing = await this.read(source.namespace, replacement);
      if (existing?.metadata?.annotations?.[MIGRATION_ANNOTATION] !== migrationId) {
        throw new FerryError('conflict', `a pod ${source.namespace}/${replacement} exists that this migration did not create`, {
          hint: 'delete it, then migrate again',
        });
      }
    });
  }

  async readiness(namespace: string, name: string): Promise<PodReadiness> {
    const pod = await this.read(namespace, name);
    return pod ? readinessOf(pod) : 'absent';
  }

  /** Resolves when the pod runs with every container up and Ready; rejects when it fails, vanishes or times out. */
  async waitRunning(namespace: string, name: string, timeoutMs: number): Promise<void> {
    const list = await this.core.listNamespacedPod({ namespace });
    const seen = list.items.find((p) => p.metadata?.name === name);
    if (seen && this.settledOrThrow(namespace, name, readinessOf(seen))) return;
    await new Promise<void>((resolve, reject) => {
      let request: { abort(): void } | undefined;
      let ended = false;
      // Aborting the watch calls its done callback again: only the first ending counts.
      const end = (err?: Error) => {
        if (ended) return;
        ended = true;
        clearTimeout(timer);
        request?.abort();
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(
        () =>
          end(
            new FerryError('timeout', `${namespace}/${name} did not run within ${timeoutMs} ms`, {
              hint: `kubectl describe pod -n ${namespace} ${name} shows why (image, scheduling, ferry-runc's restore)`,
            }),
          ),
        timeoutMs,
      );
      new Watch(this.kubeConfig)
        .watch(
          `/api/v1/namespaces/${namespace}/pods`,
          { resourceVersion: list.metadata?.resourceVersion, allowWatchBookmarks: true },
          (type: string, pod: V1Pod) => {
            if (pod.metadata?.name !== name) return;
            try {
              if (this.settledOrThrow(namespace, name, type === 'DELETED' ? 'absent' : readinessOf(pod))) end();
            } catch (err) {
              end(err as Error);
            }
          },
          (err: unknown) => {
            // The API server ends watches now and then; the wait goes on from a fresh look.
            if (err) return end(err as Error);
            this.waitRunning(namespace, name, timeoutMs).then(() => end(), end);
          },
        )
        .then((r) => {
          request = r;
          if (ended) r.abort();
        }, end);
    });
  }

  private settledOrThrow(namespace: string, name: string, r: PodReadiness): boolean {
    if (r === 'running') return true;
    if (r === 'failed' || r === 'absent') {
      throw new FerryError('runtime_failed', `${namespace}/${name} ${r === 'failed' ? 'failed' : 'was deleted'} before it ran`, {
        hint: `kubectl describe pod -n ${namespace} ${name}, and the events of its node's ferry-runc`,
      });
    }
    return false;
  }

  /** Gone at once: its containers are dead (the source, killed on its node) or never ran (a rollback). */
  async delete(namespace: string, name: string): Promise<void> {
    await this.core.deleteNamespacedPod({ namespace, name, gracePeriodSeconds: 0 }).catch((err: { code?: number }) => {
      if (err.code !== 404) throw err;
    });
  }

  /** After the restore: a container that restarts later starts afresh instead of restoring again. */
  async clearRestoreAnnotations(namespace: string, name: string): Promise<void> {
    const pod = await this.read(namespace, name);
    const keys = Object.keys(pod?.metadata?.annotations ?? {}).filter((k) => k.startsWith(`${RESTORE_ANNOTATION}.`));
    if (!keys.length) return;
    await this.core.patchNamespacedPod(
      { namespace, name, body: { metadata: { annotations: Object.fromEntries(keys.map((k) => [k, null])) } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  private async read(namespace: string, name: string): Promise<V1Pod | undefined> {
    return this.core.readNamespacedPod({ namespace, name }).catch((err: { code?: number }) => {
      if (err.code === 404) return undefined;
      throw err;
    });
  }
}

function readinessOf(pod: V1Pod): PodReadiness {
  const phase = pod.status?.phase;
  if (phase === 'Failed' || phase === 'Succeeded') return 'failed';
  const statuses = pod.status?.containerStatuses ?? [];
  const terminated = statuses.some((c) => c.state?.terminated);
  if (terminated) return 'failed';
  const ready = pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  const allRunning = statuses.length === (pod.spec?.containers ?? []).length && statuses.every((c) => c.state?.running);
  return phase === 'Running' && ready && allRunning ? 'running' : 'pending';
}
