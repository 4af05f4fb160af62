/**
 * A Kubernetes API server stand-in for tests, because no real one can run on these machines. It speaks the
 * REST protocol @kubernetes/client-node and kubectl speak, for the resources Ferry's controller uses
 * (pods, nodes, events, leases, and custom resources from CRDs): list with resourceVersion; watch as a
 * stream of JSON lines from a resourceVersion, with bookmarks and 410 Gone once history is compacted;
 * create (409 AlreadyExists), update with optimistic concurrency (409 Conflict), merge and JSON patches,
 * the status subresource, generation, finalizers and deletionTimestamp; custom resources validated against
 * their CRD as the API server does (validate.ts: pruning, strict field validation, schema, CEL; 422 Invalid
 * with the fields); bearer-token auth. Not served: admission, RBAC, garbage collection, field selectors.
 */
import { KubeConfig } from '@kubernetes/client-node';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { randomBytes } from 'node:crypto';
import type { SchemaNode } from '../../../controller/src/kube/crd.js';
import { jsonPatch, mergePatch, PatchError } from './patch.js';
import { ApiError, type KubeObject, ObjectStore, type ResourceType, type StoredEvent, selectorMatcher } from './store.js';
import { structuralProblems } from './structural.js';
import { checkCustomResource } from './validate.js';

const BUILT_IN: ResourceType[] = [
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, statusSubresource: true },
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, statusSubresource: true },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, statusSubresource: false },
  { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', kind: 'Lease', namespaced: true, statusSubresource: false },
];

interface CustomResourceDefinition {
  spec: {
    group: string;
    scope: 'Namespaced' | 'Cluster';
    names: { plural: string; kind: string };
    versions: {
      name: string;
      served: boolean;
      storage: boolean;
      subresources?: { status?: object };
      schema: { openAPIV3Schema: SchemaNode };
    }[];
  };
}

export interface KubeApiStandIn {
  url: string;
  token: string;
  store: ObjectStore;
  /** Serves a CRD's resource from now on; refuses a CRD whose schema is not structural, as Kubernetes does. */
  registerCrd(crd: CustomResourceDefinition): void;
  /** A BOOKMARK to every watch that allows them, carrying the current resourceVersion. */
  bookmark(): void;
  /** Ends every open watch, as a restarted API server or a dropped connection would. */
  dropWatches(): void;
  /** The next `count` watch requests are answered 500, as an overloaded or restarting API server might. */
  failWatches(count: number): void;
  /**
   * Holds the requests `match` picks until release(); a held request whose client has gone by then (a
   * controller killed while waiting for it) is dropped unapplied, as a write that never reached the server.
   */
  holdRequests(match: (method: string, url: string) => boolean): HeldRequests;
  /** How many watches were told 410 Gone (their revision compacted away). */
  readonly goneAnswers: number;
  /** A kubeconfig for @kubernetes/client-node pointing here, with the token. */
  kubeConfig(namespace?: string): KubeConfig;
  close(): Promise<void>;
}

export interface HeldRequests {
  /** Resolves when the first matching request arrives. */
  arrived: Promise<void>;
  /** Resolves when the client of a held request has gone (its connection closed). */
  abandoned: Promise<void>;
  release(): void;
}

interface Hold {
  match: (method: string, url: string) => boolean;
  arrived: () => void;
  abandoned: () => void;
  released: Promise<void>;
}

interface Watch {
  bookmarks: boolean;
  send(type: string, object: unknown): void;
  end(): void;
}

interface Target {
  type: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: 'status';
}

/**
 * `tls`: serve HTTPS with this certificate, as a real API server does; in-cluster clients (a pod's service
 * account) only speak HTTPS. Without it, plain HTTP for tests that run the controller as a process.
 */
export async function startKubeApi(opts: { token?: string; tls?: { cert: Buffer; key: Buffer } } = {}): Promise<KubeApiStandIn> {
  const token = opts.token ?? randomBytes(16).toString('hex');
  const store = new ObjectStore();
  const types = new Map<string, ResourceType>(BUILT_IN.map((t) => [`${t.group}/${t.version}/${t.plural}`, t]));
  const schemas = new Map<ResourceType, SchemaNode>();
  const watches = new Set<Watch>();
  let watchFailures = 0;
  let goneAnswers = 0;
  let holds: Hold[] = [];

  // One type for both: the routes use nothing that differs between the HTTP and the HTTPS server.
  const app = (opts.tls ? Fastify({ logger: false, https: opts.tls }) : Fastify({ logger: false })) as unknown as FastifyInstance;
  // Patches come with their own media types, all JSON; a DELETE may say application/json and send nothing.
  app.removeContentTypeParser('application/json');
  for (const type of [
    'application/json',
    'application/merge-patch+json',
    'application/json-patch+json',
    'application/strategic-merge-patch+json',
  ]) {
    app.addContentTypeParser(type, { parseAs: 'string' }, (_req, body, done) => {
      try {
        done(null, String(body).trim() ? JSON.parse(String(body)) : undefined);
      } catch (err) {
        done(err as Error, undefined);
      }
    });
  }

  const route = (url: string): Target => {
    const parts = new URL(url, 'http://x').pathname.split('/').filter(Boolean);
    const [root] = parts;
    const [group, version, rest] =
      root === 'api' ? ['', parts[1], parts.slice(2)] : root === 'apis' ? [parts[1], parts[2], parts.slice(3)] : ['', '', []];
    let namespace: string | undefined;
    let tail = rest as string[];
    if (tail[0] === 'namespaces' && tail.length >= 3) {
      namespace = tail[1];
      tail = tail.slice(2);
    }
    const [plural, name, sub] = tail;
    const type = types.get(`${group}/${version}/${plural}`);
    if (!type) throw new ApiError(404, 'NotFound', `the server could not find the requested resource (${url})`);
    if (sub && sub !== 'status') throw new ApiError(404, 'NotFound', `no subresource ${sub}`);
    return { type, ...(namespace ? { namespace } : {}), ...(name ? { name } : {}), ...(sub ? { subresource: 'status' as const } : {}) };
  };

  /** CRD objects are checked as the API server checks them; built-in kinds are stored as given. */
  const validated = (t: ResourceType, obj: KubeObject, strict: boolean): KubeObject => {
    const schema = schemas.get(t);
    if (!schema) return obj;
    const { errors, pruned } = checkCustomResource(schema, obj as unknown as Record<string, unknown>, strict);
    if (errors.length) {
      const what = `${t.kind}.${t.group} "${obj.metadata?.name ?? ''}"`;
      throw new ApiError(422, 'Invalid', `${what} is invalid: ${errors.map((e) => `${e.field}: ${e.message}`).join(', ')}`, {
        name: obj.metadata?.name,
        group: t.group,
        kind: t.kind,
        causes: errors.map((e) => ({ reason: 'FieldValueInvalid', message: e.message, field: e.field })),
      });
    }
    return { ...(pruned as KubeObject), metadata: obj.metadata };
  };

  app.addHook('onRequest', async (req, reply) => {
    if (req.headers.authorization !== `Bearer ${token}`) {
      await reply.code(401).send(status(new ApiError(401, 'Unauthorized', 'Unauthorized')));
    }
  });

  app.setErrorHandler(async (err, _req, reply) => {
    const e =
      err instanceof ApiError
        ? err
        : err instanceof PatchError
          ? new ApiError(422, 'Invalid', err.message)
          : new ApiError(400, 'BadRequest', (err as Error).message);
    await reply.code(e.code).send(status(e));
  });

  app.all('/*', async (req: FastifyRequest, reply: FastifyReply) => {
    const hold = holds.find((h) => h.match(req.method, req.url));
    if (hold) {
      hold.arrived();
      req.raw.socket.once('close', hold.abandoned);
      await hold.released;
      if (req.raw.socket.destroyed) {
        reply.hijack();
        return reply;
      }
    }
    const target = route(req.url);
    const { type: t, namespace: ns, name } = target;
    const query = req.query as Record<string, string | undefined>;
    const strict = query.fieldValidation === 'Strict';
    if (t.namespaced && !ns && name) throw new ApiError(404, 'NotFound', `${t.plural} are namespaced`);
    const apiVersion = t.group ? `${t.group}/${t.version}` : t.version;

    if (!name) {
      if (req.method === 'GET' && (query.watch === 'true' || query.watch === '1')) {
        if (watchFailures > 0) {
          watchFailures--;
          throw new ApiError(500, 'InternalError', 'the stand-in was told to fail this watch');
        }
        return watch(req, reply, t, ns, query);
      }
      if (req.method === 'GET') {
        return {
          apiVersion,
          kind: `${t.kind}List`,
          metadata: { resourceVersion: String(store.revision) },
          items: store.list(t, ns, query.labelSelector),
        };
      }
      if (req.method === 'POST') {
        const body = req.body as KubeObject;
        return reply.code(201).send(store.create(t, ns, validated(t, body, strict)));
      }
      throw new ApiError(405, 'MethodNotAllowed', `${req.method} is not allowed on a collection`);
    }

    switch (req.method) {
      case 'GET':
        return store.get(t, ns, name);
      case 'PUT': {
        const body = req.body as KubeObject;
        if (body.metadata?.name !== name) throw new ApiError(400, 'BadRequest', 'the name in the body does not match the URL');
        const next = target.subresource ? { ...store.get(t, ns, name), status: body.status } : body;
        if (target.subresource) next.metadata.resourceVersion = body.metadata.resourceVersion ?? '';
        return store.update(t, ns, validated(t, next, strict), target.subresource);
      }
      case 'PATCH': {
        const current = store.get(t, ns, name);
        const kind = String(req.headers['content-type'] ?? '').split(';')[0];
        const patched = (
          kind === 'application/json-patch+json' ? jsonPatch(current, req.body) : mergePatch(current, req.body)
        ) as KubeObject;
        // A patch applies to what is stored now; it conflicts only when it names a resourceVersion itself.
        const named = (req.body as { metadata?: { resourceVersion?: string } })?.metadata?.resourceVersion;
        patched.metadata.resourceVersion = named ?? current.metadata.resourceVersion;
        return store.update(t, ns, validated(t, patched, strict), target.subresource);
      }
      case 'DELETE':
        return store.delete(t, ns, name);
      default:
        throw new ApiError(405, 'MethodNotAllowed', `${req.method} is not allowed`);
    }
  });

  function watch(
    req: FastifyRequest,
    reply: FastifyReply,
    t: ResourceType,
    ns: string | undefined,
    query: Record<string, string | undefined>,
  ) {
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // Clients wait for the headers before they read events; a quiet resource must not leave them waiting.
    raw.flushHeaders();
    const matches = selectorMatcher(query.labelSelector);
    const w: Watch = {
      bookmarks: query.allowWatchBookmarks === 'true',
      send: (type, object) => raw.write(`${JSON.stringify({ type, object })}\n`),
      end: () => {
        watches.delete(w);
        stop?.();
        clearTimeout(timer);
        raw.end();
      },
    };
    let stop: (() => void) | undefined;
    const timer = query.timeoutSeconds ? setTimeout(() => w.end(), Number(query.timeoutSeconds) * 1000) : undefined;
    req.raw.on('close', () => w.end());
    const send = (e: StoredEvent) => {
      if (matches(e.object.metadata.labels ?? {})) w.send(e.type, e.object);
    };
    const rv = query.resourceVersion;
    try {
      if (!rv || rv === '0') {
        // No revision: the current state as ADDED events, then what changes.
        for (const o of store.list(t, ns, query.labelSelector)) w.send('ADDED', o);
        stop = store.watch(t, ns, store.revision, send);
      } else {
        stop = store.watch(t, ns, Number(rv), send);
      }
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      // The API server answers an expired revision inside the stream, then closes it.
      if (err.code === 410) goneAnswers++;
      w.send('ERROR', status(err));
      w.end();
      return reply;
    }
    watches.add(w);
    return reply;
  }

  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url: address,
    token,
    store,
    registerCrd(crd) {
      const version = crd.spec.versions.find((v) => v.served && v.storage);
      if (!version) throw new Error('a CRD needs a served storage version');
      const problems = structuralProblems(version.schema.openAPIV3Schema);
      if (problems.length) throw new Error(`the CRD's schema is not structural:\n${problems.join('\n')}`);
      const t: ResourceType = {
        group: crd.spec.group,
        version: version.name,
        plural: crd.spec.names.plural,
        kind: crd.spec.names.kind,
        namespaced: crd.spec.scope === 'Namespaced',
        statusSubresource: Boolean(version.subresources?.status),
      };
      types.set(`${t.group}/${t.version}/${t.plural}`, t);
      schemas.set(t, version.schema.openAPIV3Schema);
    },
    bookmark() {
      for (const w of watches) if (w.bookmarks) w.send('BOOKMARK', { metadata: { resourceVersion: String(store.revision) } });
    },
    dropWatches() {
      for (const w of [...watches]) w.end();
    },
    failWatches(count) {
      watchFailures = count;
    },
    holdRequests(match) {
      let arrived = () => {};
      let abandoned = () => {};
      let release = () => {};
      const hold: Hold = {
        match,
        arrived: () => arrived(),
        abandoned: () => abandoned(),
        released: new Promise<void>((r) => (release = r)),
      };
      holds.push(hold);
      return {
        arrived: new Promise<void>((r) => (arrived = r)),
        abandoned: new Promise<void>((r) => (abandoned = r)),
        release: () => {
          holds = holds.filter((h) => h !== hold);
          release();
        },
      };
    },
    get goneAnswers() {
      return goneAnswers;
    },
    kubeConfig(namespace = 'default') {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'stand-in', server: address, skipTLSVerify: true }],
        users: [{ name: 'ferry', token }],
        contexts: [{ name: 'stand-in', cluster: 'stand-in', user: 'ferry', namespace }],
        currentContext: 'stand-in',
      });
      return kc;
    },
    async close() {
      for (const w of [...watches]) w.end();
      await app.close();
    },
  };
}

function status(e: ApiError) {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: e.message,
    reason: e.reason,
    code: e.code,
    ...(e.details ? { details: e.details } : {}),
  };
}
