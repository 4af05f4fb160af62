/** The controller's HTTP API: nodes, migrations and their event streams. Thin routes over the registry and orchestrator. */
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import { tokenMatches } from '../../../agent/src/api/auth.js';
import { installErrorHandling } from '../../../agent/src/api/errors.js';
import { FerryError } from '../../../agent/src/errors.js';
import type { RuntimeName } from '../../../agent/src/runtimes/types.js';
import type { Orchestrator } from '../migration/orchestrator.js';
import { isFinished, type MigrationEvent, type MigrationRequest } from '../migration/types.js';
import type { NodeRegistry } from '../nodes.js';
import { routes, sharedSchemas } from './schemas.js';

export interface ControllerApiOptions {
  orchestrator: Orchestrator;
  nodes: NodeRegistry;
  token: string;
  logger?: boolean;
}

const OPEN_ROUTES = new Set(['/healthz', '/openapi.json']);

export async function buildControllerApi({ orchestrator, nodes, token, logger = false }: ControllerApiOptions): Promise<FastifyInstance> {
  if (!token) throw new FerryError('bad_request', 'the controller needs a token', { hint: 'set FERRY_CONTROLLER_TOKEN or --token' });
  const app = Fastify({ logger, ajv: { customOptions: { removeAdditional: false, useDefaults: true } } });
  await app.register(swagger, {
    openapi: {
      info: { title: 'Ferry controller API', version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  for (const s of sharedSchemas) app.addSchema(s);
  installErrorHandling(app);
  app.addHook('onRequest', async (req) => {
    if (OPEN_ROUTES.has(req.routeOptions.url ?? '')) return;
    if (!tokenMatches(req.headers.authorization, token)) {
      throw new FerryError('unauthorized', 'missing or wrong bearer token', { hint: 'send Authorization: Bearer <controller token>' });
    }
  });

  app.get('/healthz', { schema: routes.health }, async () => ({ ok: true }));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.post<{ Body: { name: string; url: string; token: string } }>('/nodes', { schema: routes.registerNode }, async (req, reply) =>
    reply.status(201).send(await nodes.register(req.body.name, req.body.url, req.body.token)),
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

  app.post<{ Body: MigrationRequest }>('/migrate', { schema: routes.migrate }, async (req, reply) => {
    const m = await orchestrator.start(req.body);
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
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    let last = after;
    const send = (e: MigrationEvent) => {
      if (e.seq <= last) return;
      last = e.seq;
      res.write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${JSON.stringify(e)}\n\n`);
      if (e.type === 'finished') res.end();
    };
    // Subscribe before replaying, so an event between the two is neither lost nor sent twice (seq guards it).
    const unsubscribe = orchestrator.subscribe(id, send);
    res.on('close', unsubscribe);
    for (const e of past) send(e);
    for (const e of orchestrator.events(id, last)) send(e);
    if (isFinished(orchestrator.get(id)) && !res.writableEnded) res.end();
  });
  return app;
}
