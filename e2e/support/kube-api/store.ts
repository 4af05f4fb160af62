/**
 * The API stand-in's object store: what etcd and the API server's registry keep for it. One resourceVersion
 * counter for everything (as etcd's revision), object metadata filled in as the API server does (uid,
 * creationTimestamp, generation bumped when the spec changes, deletionTimestamp while finalizers remain),
 * and a history of changes for watches, which compact() cuts so that a watch from before is told 410 Gone.
 */
import { randomUUID } from 'node:crypto';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: unknown[];
  [key: string]: unknown;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: unknown;
  [key: string]: unknown;
}

export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  /** With a status subresource, writes to the object ignore status and writes to /status all but status. */
  statusSubresource: boolean;
}

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  type: EventType;
  object: KubeObject;
  rv: number;
  resource: string;
}

export class ApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

type Listener = (e: StoredEvent) => void;

const resourceId = (t: ResourceType) => `${t.group}/${t.plural}`;
const keyOf = (t: ResourceType, ns: string | undefined, name: string) => `${resourceId(t)}/${ns ?? ''}/${name}`;

export class ObjectStore {
  private rv = 0;
  /** Events at or below this revision are compacted away. */
  private floor = 0;
  private readonly objects = new Map<string, KubeObject>();
  private readonly history: StoredEvent[] = [];
  private readonly listeners = new Set<Listener>();

  get revision(): number {
    return this.rv;
  }

  list(t: ResourceType, ns: string | undefined, labelSelector?: string): KubeObject[] {
    const prefix = `${resourceId(t)}/${ns ?? ''}`;
    const matches = selectorMatcher(labelSelector);
    return [...this.objects.entries()]
      .filter(([k]) => (ns === undefined ? k.startsWith(`${resourceId(t)}/`) : k.startsWith(`${prefix}/`)))
      .map(([, o]) => structuredClone(o))
      .filter((o) => matches(o.metadata.labels ?? {}));
  }

  get(t: ResourceType, ns: string | undefined, name: string): KubeObject {
    const o = this.objects.get(keyOf(t, ns, name));
    if (!o) throw new ApiError(404, 'NotFound', `${t.plural}.${t.group || 'core'} "${name}" not found`, { name, kind: t.plural });
    return structuredClone(o);
  }

  create(t: ResourceType, ns: string | undefined, obj: KubeObject): KubeObject {
    const name = obj.metadata?.name;
    if (!name) throw new ApiError(422, 'Invalid', 'metadata.name: Required value', { causes: [{ field: 'metadata.name' }] });
    const key = keyOf(t, ns, name);
    if (this.objects.has(key)) {
      throw new ApiError(409, 'AlreadyExists', `${t.plural}.${t.group || 'core'} "${name}" already exists`, { name, kind: t.plural });
    }
    const stored: KubeObject = {
      ...structuredClone(obj),
      apiVersion: t.group ? `${t.group}/${t.version}` : t.version,
      kind: t.kind,
      metadata: {
        ...structuredClone(obj.metadata),
        ...(t.namespaced ? { namespace: ns } : {}),
        uid: randomUUID(),
        creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        generation: 1,
      },
    };
    // A create never sets status through an object with a status subresource.
    if (t.statusSubresource) delete stored.status;
    delete stored.metadata.deletionTimestamp;
    return this.commit(t, key, 'ADDED', stored);
  }

  /**
   * Replaces an object (or only its status, for the status subresource). A resourceVersion in the update
   * must be the stored one: optimistic concurrency, 409 Conflict otherwise.
   */
  update(t: ResourceType, ns: string | undefined, obj: KubeObject, subresource?: 'status'): KubeObject {
    const name = obj.metadata?.name;
    const key = keyOf(t, ns, name);
    const current = this.objects.get(key);
    if (!current) throw new ApiError(404, 'NotFound', `${t.plural}.${t.group || 'core'} "${name}" not found`, { name, kind: t.plural });
    const rv = obj.metadata.resourceVersion;
    if (rv !== undefined && rv !== '' && rv !== current.metadata.resourceVersion) {
      throw new ApiError(
        409,
        'Conflict',
        `Operation cannot be fulfilled on ${t.plural}.${t.group || 'core'} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        { name, kind: t.plural },
      );
    }
    let next: KubeObject;
    if (subresource === 'status') {
      next = { ...structuredClone(current), status: structuredClone(obj.status) };
    } else {
      next = { ...structuredClone(obj), apiVersion: current.apiVersion, kind: current.kind };
      // Fields the server owns keep their values whatever the client sent.
      next.metadata = {
        ...structuredClone(obj.metadata),
        name: current.metadata.name,
        uid: current.metadata.uid,
        creationTimestamp: current.metadata.creationTimestamp,
        generation: current.metadata.generation,
        ...(current.metadata.namespace ? { namespace: current.metadata.namespace } : {}),
        ...(current.metadata.deletionTimestamp ? { deletionTimestamp: current.metadata.deletionTimestamp } : {}),
      };
      if (t.statusSubresource) next.status = structuredClone(current.status);
      if (JSON.stringify(next.spec) !== JSON.stringify(current.spec)) next.metadata.generation = (current.metadata.generation ?? 1) + 1;
    }
    // Deleting waits for the finalizers: the last one removed ends the object.
    if (next.metadata.deletionTimestamp && !next.metadata.finalizers?.length) {
      this.objects.delete(key);
      return this.record(t, 'DELETED', this.stamp(next));
    }
    return this.commit(t, key, 'MODIFIED', next);
  }

  delete(t: ResourceType, ns: string | undefined, name: string): KubeObject {
    const key = keyOf(t, ns, name);
    const current = this.get(t, ns, name);
    if (current.metadata.finalizers?.length) {
      if (current.metadata.deletionTimestamp) return current;
      current.metadata.deletionTimestamp = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      return this.commit(t, key, 'MODIFIED', current);
    }
    this.objects.delete(key);
    return this.record(t, 'DELETED', this.stamp(current));
  }

  /**
   * Calls listener with every change to type t (in ns, or all namespaces) after revision `from`. A
   * revision older than the compacted history is gone: 410, and the client must list again.
   */
  watch(t: ResourceType, ns: string | undefined, from: number, listener: Listener): () => void {
    if (from < this.floor) {
      throw new ApiError(410, 'Expired', `too old resource version: ${from} (${this.floor})`);
    }
    const wanted = (e: StoredEvent) => e.resource === resourceId(t) && (ns === undefined || e.object.metadata.namespace === ns);
    for (const e of this.history) if (e.rv > from && wanted(e)) listener(e);
    const live: Listener = (e) => {
      if (wanted(e)) listener(e);
    };
    this.listeners.add(live);
    return () => this.listeners.delete(live);
  }

  /** Forgets the history up to now, as etcd compaction does: older watches get 410 Gone. */
  compact(): void {
    this.floor = this.rv;
    this.history.length = 0;
  }

  private stamp(o: KubeObject): KubeObject {
    this.rv += 1;
    o.metadata.resourceVersion = String(this.rv);
    return o;
  }

  private commit(t: ResourceType, key: string, type: EventType, o: KubeObject): KubeObject {
    const stored = sortedKeys(this.stamp(o)) as KubeObject;
    this.objects.set(key, stored);
    return this.record(t, type, stored);
  }

  private record(t: ResourceType, type: EventType, o: KubeObject): KubeObject {
    const e: StoredEvent = { type, object: structuredClone(o), rv: Number(o.metadata.resourceVersion), resource: resourceId(t) };
    this.history.push(e);
    for (const l of this.listeners) l(e);
    return structuredClone(o);
  }
}

/**
 * The API server keeps custom resources as Go maps and writes them back with sorted keys, not in the order
 * a client sent them; so does the stand-in, so that a client comparing JSON text finds out here.
 */
function sortedKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortedKeys);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(
    Object.keys(v)
      .sort()
      .map((k) => [k, sortedKeys((v as Record<string, unknown>)[k])]),
  );
}

/** Equality-based label selectors (a=b, a!=b, a), the kind controllers and kubectl -l use most. */
export function selectorMatcher(selector: string | undefined): (labels: Record<string, string>) => boolean {
  const terms = (selector ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return (labels) =>
    terms.every((term) => {
      const ne = /^([^!=]+)!=(.*)$/.exec(term);
      if (ne) return labels[ne[1] as string] !== ne[2];
      const eq = /^([^=]+)==?(.*)$/.exec(term);
      if (eq) return labels[eq[1] as string] === eq[2];
      return term in labels;
    });
}
