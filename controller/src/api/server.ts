/** The controller's HTTP API: nodes, migrations and their event streams, checkpoint policies. Thin routes over the registry and orchestrator. */
import type { TlsIdentity } from '../../../agent/src/tls/identity.js';
import type { SshRoute } from '../../../agent/src/ssh-tunnel.js';
import type { FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { createBaseApi, type Logging } from '../../../agent/src/api/base.js';
import { FerryError } from '../../../agent/src/errors.js';
import type { RuntimeName } from '../../../agent/src/runtimes/types.js';
import type { Orchestrator } from '../migration/orchestrator.js';
import {
  isFinished,
  type MigrationEvent,
  type MigrationRecord,
  type MigrationRequest,
  type PodMigrationRequest,
} from '../migration/types.js';
import type { NodeRegistry } from '../nodes.js';
import type { PolicyScheduler } from '../policy/scheduler.js';
import { registerPolicyRoutes } from './policy-routes.js';
import { openEventStream } from './sse.js';
import { routes, sharedSchemas } from './schemas.js';

export interface ControllerApiOptions {
  orchestrator: Orchestrator;
  nodes: NodeRegistry;
  policies: PolicyScheduler;
  token: string;
  /** Served at GET /metrics (controller/src/metrics.ts). */
  metrics: Registry;
  logger?: Logging;
  /** Serve over mTLS with this identity. */
  tls?: TlsIdentity;
}

export async function buildControllerApi({
  orchestrator,
  nodes,
  policies,
  token,
  metrics,
  logger = false,
  tls,
}: ControllerApiOptions): Promise<FastifyInstance> {
  const app = await createBaseApi({
    what: 'controller',
    token,
    tokenSource: 'FERRY_CONTROLLER_TOKEN or --controller-token',
    schemas: sharedSchemas,
    logger,
    ajvOptions: { removeAdditional: false, useDefaults: true },
    metrics,
    ...(tls ? { tls } : {}),
  });

  app.get('/healthz', { schema: routes.health }, async () => ({ ok: true }));

  app.post<{ Body: { name: string; url: string; token: string; ssh?: SshRoute } }>(
    '/nodes',
    { schema: routes.registerNode },
    async (req, reply) => reply.status(201).send(await nodes.register(req.body.name, req.body.url, req.body.token, req.body.ssh)),
  );
  app.get('/nodes', { schema: routes.listNodes }, async () => ({ nodes: nodes.list() }));
  app.delete<{ Params: { name: string } }>('/nodes/:name', { schema: routes.removeNode }, async (req, reply) => {
    nodes.remove(req.params.name);
    return reply.status(204).send();
  });
  app.get<{ Params: { name: string }; Querystring: { runtime?: RuntimeName } }>(
    '/nodes/:name/containers',
    { schema: routes.nodeContainers },
    async (req) => ({ containers: await nodes.client(req.params.name).containers(req.query.runtime) }),
  );

  app.post<{ Body: MigrationBody }>('/migrate', { schema: routes.migrate }, async (req, reply) => {
    const m = await startMigration(orchestrator, req.body);
    return reply.status(202).header('location', `/migrations/${m.id}`).send({ id: m.id, migration: m });
  });
  app.get('/migrations', { schema: routes.listMigrations }, async () => ({ migrations: orchestrator.list() }));
  app.get<{ Params: { id: string } }>('/migrations/:id', { schema: routes.getMigration }, async (req) => orchestrator.get(req.params.id));
  app.post<{ Params: { id: string } }>('/migrations/:id/cancel', { schema: routes.cancelMigration }, async (req, reply) =>
    reply.status(202).send(orchestrator.cancel(req.params.id)),
  );

  app.get<{ Params: { id: string } }>('/migrations/:id/events', { schema: routes.migrationEvents }, async (req, reply) => {
    const id = req.params.id;
    const after = Number(req.headers['last-event-id'] ?? 0) || 0;
    const past = orchestrator.events(id, after);
    const stream = openEventStream(reply);
    let last = after;
    const send = (e: MigrationEvent) => {
      if (e.seq <= last) return;
      last = e.seq;
      stream.send(e.seq, e.type, e);
      if (e.type === 'finished') stream.end();
    };
    // Subscribe before replaying, so an event between the two is neither lost nor sent twice (seq guards it).
    const unsubscribe = orchestrator.subscribe(id, send);
    stream.onClose(unsubscribe);
    for (const e of past) send(e);
    for (const e of orchestrator.events(id, last)) send(e);
    if (isFinished(orchestrator.get(id))) stream.end();
  });
  registerPolicyRoutes(app, policies);
  return app;
}

type MigrationBody = Partial<MigrationRequest> &
  Pick<MigrationRequest, 'targetNode'> & { pod?: PodMigrationRequest['pod']; readyTimeoutMs?: number };

/** A container or a pod, never both; a pod moves by stop-and-copy, frozen until its copy runs. */
function startMigration(orchestrator: Orchestrator, body: MigrationBody): Promise<MigrationRecord> {
  const { pod, readyTimeoutMs, container, ...rest } = body;
  if (pod && container) {
    throw new FerryError('bad_request', 'say container or pod, not both', { details: { field: 'pod' } });
  }
  if (pod) {
    if (rest.strategy && rest.strategy !== 'auto' && rest.strategy !== 'stopcopy') {
      throw new FerryError('bad_request', `a pod moves by stop-and-copy, not ${rest.strategy}`, { details: { field: 'strategy' } });
    }
    return orchestrator.startPod({ pod, targetNode: body.targetNode, readyTimeoutMs: readyTimeoutMs ?? 120_000 });
  }
  if (!container) throw new FerryError('bad_request', 'say which container (or pod) to migrate', { details: { field: 'container' } });
  return orchestrator.start({ ...(rest as Omit<MigrationRequest, 'container'>), container });
}
