/**
 * Policies' checkpoints as Checkpoint objects (checkpoint-crd.ts), in the policy's namespace, owned by its
 * CheckpointPolicy object: created when a run keeps a checkpoint, deleted when retention deletes it, and
 * collected by the API server with the policy. Writes go out one after another; one that fails is logged
 * and never retried (the object is a view; the scheduler's store stays the source of truth).
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import type { PolicyEvent } from '../policy/events.js';
import type { PolicyCheckpoint } from '../policy/types.js';
import { CHECKPOINT_KIND, CHECKPOINT_PLURAL } from './record-crds.js';
import { CRD_GROUP, CRD_VERSION } from './crd.js';
import type { PolicyObject } from './policy-sync.js';

const at = { group: CRD_GROUP, version: CRD_VERSION, plural: CHECKPOINT_PLURAL };

/** The CheckpointPolicy object behind a scheduler policy name (`<namespace>.<name>`), if it is one. */
export type PolicyObjectLookup = (namespace: string, name: string) => PolicyObject | undefined;

export class CheckpointRecords {
  private readonly api: CustomObjectsApi;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    kubeConfig: KubeConfig,
    private readonly policyObject: PolicyObjectLookup,
    private readonly log: (line: string) => void,
  ) {
    this.api = kubeConfig.makeApiClient(CustomObjectsApi);
  }

  handle(e: PolicyEvent): void {
    const dot = e.policy.indexOf('.');
    if (dot < 0) return; // a standalone policy: no object to own its checkpoints
    const namespace = e.policy.slice(0, dot);
    const name = e.policy.slice(dot + 1);
    if (e.type === 'checkpoint')
      this.enqueue(`recording ${String(e.data?.id)}`, () => this.create(namespace, name, e.data as unknown as PolicyCheckpoint));
    if (e.type === 'deleted') {
      for (const id of (e.data?.checkpoints as string[] | undefined) ?? [])
        this.enqueue(`forgetting ${id}`, () => this.remove(namespace, id));
    }
  }

  /** Resolves when every write queued so far has been tried. */
  flushed(): Promise<void> {
    return this.queue;
  }

  private enqueue(what: string, work: () => Promise<unknown>): void {
    this.queue = this.queue.then(work).then(
      () => undefined,
      (err: unknown) => this.log(`Checkpoint objects: ${what}: ${(err as Error).message}`),
    );
  }

  private async create(namespace: string, policy: string, c: PolicyCheckpoint): Promise<void> {
    const owner = this.policyObject(namespace, policy);
    const uid = (owner?.metadata as { uid?: string } | undefined)?.uid;
    const body = {
      apiVersion: `${CRD_GROUP}/${CRD_VERSION}`,
      kind: CHECKPOINT_KIND,
      metadata: {
        name: c.id,
        namespace,
        labels: { 'ferry.dev/policy': policy },
        ...(uid ? { ownerReferences: [{ apiVersion: `${CRD_GROUP}/${CRD_VERSION}`, kind: 'CheckpointPolicy', name: policy, uid }] } : {}),
      },
      spec: {
        policy,
        node: c.node,
        container: c.containerName,
        runtime: c.runtime,
        run: c.runId,
        ...(c.parent ? { parent: c.parent } : {}),
        ...(c.copies?.length ? { copies: c.copies } : {}),
      },
    };
    await this.api.createNamespacedCustomObject({ ...at, namespace, body }).catch((err: { code?: number }) => {
      if (err.code !== 409) throw err;
    });
  }

  private async remove(namespace: string, id: string): Promise<void> {
    await this.api.deleteNamespacedCustomObject({ ...at, namespace, name: id }).catch((err: { code?: number }) => {
      if (err.code !== 404) throw err;
    });
  }
}
