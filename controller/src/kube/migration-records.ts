/**
 * Pod migrations as Migration objects (migration-crd.ts): the Lease holder writes each of its pod
 * migrations' record there as it goes (created once, then its status replaced), and a replica that takes
 * the Lease over reads the ones still running, whose journal was in its predecessor's store, to settle them.
 * Writes for one migration go out one after another, the newest record last; a failed write is logged and
 * the next one carries the whole record again.
 */
import { CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import type { MigrationRecord } from '../migration/types.js';
import { CRD_GROUP, CRD_VERSION } from './crd.js';
import { MIGRATION_KIND, MIGRATION_PLURAL } from './record-crds.js';

interface MigrationObject {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  status?: { phase?: string; record?: MigrationRecord };
}

const at = { group: CRD_GROUP, version: CRD_VERSION, plural: MIGRATION_PLURAL };

export class MigrationRecords {
  private readonly api: CustomObjectsApi;
  private readonly writes = new Map<string, Promise<void>>();

  constructor(
    kubeConfig: KubeConfig,
    private readonly log: (line: string) => void,
  ) {
    this.api = kubeConfig.makeApiClient(CustomObjectsApi);
  }

  /** Queues the record's write after the ones before it; never rejects. */
  write(m: MigrationRecord): Promise<void> {
    if (!m.pod) return Promise.resolve();
    const snapshot = structuredClone(m);
    const next = (this.writes.get(m.id) ?? Promise.resolve())
      .then(() => this.put(snapshot))
      .catch((err: unknown) => this.log(`migration record ${m.id}: ${(err as Error).message}`));
    this.writes.set(m.id, next);
    void next.finally(() => {
      if (this.writes.get(m.id) === next) this.writes.delete(m.id);
    });
    return next;
  }

  /** Resolves when every queued write has been tried. */
  async flushed(): Promise<void> {
    await Promise.all(this.writes.values());
  }

  /** The records of pod migrations whose objects still say running, in every namespace. */
  async unfinished(): Promise<MigrationRecord[]> {
    const list = (await this.api.listClusterCustomObject(at)) as { items: MigrationObject[] };
    return list.items.flatMap((o) => (o.status?.phase === 'running' && o.status.record?.pod ? [o.status.record] : []));
  }

  private async put(m: MigrationRecord): Promise<void> {
    const pod = m.pod as NonNullable<MigrationRecord['pod']>;
    const namespace = pod.namespace;
    const status = {
      phase: m.status,
      step: m.step,
      ...(pod.replacement ? { replacement: pod.replacement } : {}),
      ...(m.figures.downtimeMs !== undefined ? { downtimeMs: Math.round(m.figures.downtimeMs) } : {}),
      message: m.error ? `${m.error.step}: ${m.error.message}${m.rollback ? `; ${m.rollback.outcome}` : ''}` : (m.rollback?.outcome ?? ''),
      record: m,
    };
    const current = (await this.api.getNamespacedCustomObject({ ...at, namespace, name: m.id }).catch((err: { code?: number }) => {
      if (err.code === 404) return undefined;
      throw err;
    })) as MigrationObject | undefined;
    const body = {
      apiVersion: `${CRD_GROUP}/${CRD_VERSION}`,
      kind: MIGRATION_KIND,
      metadata: {
        name: m.id,
        namespace,
        ...(current?.metadata.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      spec: { pod: { name: pod.name }, sourceNode: m.source.node, targetNode: m.target.node },
      status,
    };
    if (!current) {
      const created = (await this.api.createNamespacedCustomObject({ ...at, namespace, body })) as MigrationObject;
      body.metadata.resourceVersion = created.metadata.resourceVersion as string;
    }
    // The status subresource ignores status on create: it is always written here.
    await this.api.replaceNamespacedCustomObjectStatus({ ...at, namespace, name: m.id, body });
  }
}
