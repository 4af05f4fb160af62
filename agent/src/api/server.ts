/** The agent's HTTP API: thin routes over Agent, with schemas, auth and one error shape. */
import type { FastifyInstance } from 'fastify';
import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import type { Agent, CheckpointParams, HoldParams, PrepareParams, RestoreParams } from '../agent.js';
import type { RuntimeName } from '../runtimes/types.js';
import { AgentMetrics, measured } from './agent-metrics.js';
import { createBaseApi, type Logging } from './base.js';
import type { TlsIdentity } from '../tls/identity.js';
import { routes, sharedSchemas } from './schemas.js';

export interface ApiOptions {
  agent: Agent;
  token: string;
  logger?: Logging;
  /** Serve over mTLS with this identity. */
  tls?: TlsIdentity;
}

export async function buildAgentApi({ agent, token, logger = false, tls }: ApiOptions): Promise<FastifyInstance> {
  const metrics = new AgentMetrics(agent.node);
  const app = await createBaseApi({
    what: 'agent',
    token,
    tokenSource: 'FERRY_TOKEN or --token',
    schemas: sharedSchemas,
    logger,
    ajvOptions: { coerceTypes: 'array', removeAdditional: false },
    metrics: metrics.registry,
    ...(tls ? { tls } : {}),
  });
  // Archives arrive as raw streams; the store unpacks and verifies them as they come.
  app.addContentTypeParser(['application/x-tar', 'application/octet-stream'], (_req, payload, done) => done(null, payload));

  app.get('/healthz', { schema: routes.health }, async () => ({ ok: true, node: agent.node }));
  app.get<{ Querystring: { refresh?: boolean } }>('/v1/node', { schema: routes.node }, async (req) => agent.probe(req.query.refresh));
  app.get('/v1/stats', { schema: routes.stats }, async () => ({ restoreMs: agent.recentRestoreMs() }));
  app.get<{ Querystring: { runtime?: RuntimeName } }>('/v1/containers', { schema: routes.listContainers }, async (req) => ({
    containers: await agent.listContainers(req.query.runtime),
  }));

  app.get<{ Params: { runtime: RuntimeName; ref: string } }>('/v1/images/:runtime/:ref', { schema: routes.image }, async (req, reply) => {
    await agent.assertImage(req.params.runtime, req.params.ref);
    return reply.status(204).send();
  });
  app.get<{ Params: { runtime: RuntimeName; ref: string } }>('/v1/containers/:runtime/:ref', { schema: routes.getContainer }, async (req) =>
    agent.findContainer(req.params.runtime, req.params.ref),
  );
  app.post<{ Params: { runtime: RuntimeName }; Body: PrepareParams }>(
    '/v1/containers/:runtime/prepare',
    { schema: routes.prepareContainer },
    async (req, reply) =>
      reply.status(201).send(await measured(metrics, 'prepare', () => agent.prepareContainer(req.params.runtime, req.body))),
  );
  app.delete<{ Params: { runtime: RuntimeName; ref: string } }>(
    '/v1/containers/:runtime/:ref',
    { schema: routes.removeContainer },
    async (req, reply) => {
      await measured(metrics, 'remove-container', () => agent.removeContainer(req.params.runtime, req.params.ref));
      return reply.status(204).send();
    },
  );

  app.post<{ Body: CheckpointParams }>('/v1/checkpoints', { schema: routes.createCheckpoint }, async (req, reply) =>
    reply.status(201).send(
      await measured(
        metrics,
        'checkpoint',
        () => agent.checkpoint(req.body),
        (m) => metrics.checkpointed(m),
      ),
    ),
  );
  app.get('/v1/checkpoints', { schema: routes.listCheckpoints }, async () => ({ checkpoints: await agent.listCheckpoints() }));
  app.get<{ Params: { id: string } }>('/v1/checkpoints/:id', { schema: routes.getCheckpoint }, async (req) =>
    agent.getCheckpoint(req.params.id),
  );
  app.post<{ Body: HoldParams }>('/v1/holds', { schema: routes.hold }, async (req, reply) =>
    reply.status(201).send(await measured(metrics, 'hold', () => agent.hold(req.body))),
  );
  app.delete<{ Params: { id: string }; Querystring: { kill?: boolean } }>('/v1/holds/:id', { schema: routes.releaseHold }, async (req) =>
    agent.releaseHold(req.params.id, { kill: req.query.kill === true }),
  );
  app.delete<{ Params: { id: string } }>('/v1/checkpoints/:id', { schema: routes.deleteCheckpoint }, async (req, reply) => {
    await measured(metrics, 'delete-checkpoint', () => agent.deleteCheckpoint(req.params.id));
    return reply.status(204).send();
  });
  app.get<{ Params: { id: string }; Querystring: { waitMs?: number } }>(
    '/v1/checkpoints/:id/page-server',
    { schema: routes.pageServer },
    async (req) => agent.pageServerState(req.params.id, req.query.waitMs ?? 0),
  );
  app.get<{ Params: { id: string }; Querystring: { waitMs?: number } }>(
    '/v1/checkpoints/:id/memory',
    { schema: routes.memoryLoad },
    async (req) => agent.memoryLoadState(req.params.id, req.query.waitMs ?? 0),
  );
  app.post<{ Params: { id: string }; Body: RestoreParams | undefined }>(
    '/v1/checkpoints/:id/restore',
    { schema: routes.restore },
    async (req, reply) =>
      reply.status(201).send(
        await measured(
          metrics,
          'restore',
          () => agent.restore(req.params.id, req.body ?? {}),
          (r) => metrics.restored(r),
        ),
      ),
  );
  app.get<{ Params: { id: string } }>('/v1/checkpoints/:id/archive', { schema: routes.exportArchive }, async (req, reply) => {
    const stream = await agent.exportCheckpoint(req.params.id);
    return reply
      .header('content-type', 'application/x-tar')
      .header('content-disposition', `attachment; filename="${req.params.id}.tar"`)
      .send(stream);
  });
  app.post<{ Params: { id: string }; Body: { peer: { url: string; token: string } } }>(
    '/v1/checkpoints/:id/send',
    { schema: routes.sendCheckpoint },
    async (req) =>
      measured(
        metrics,
        'send',
        () => agent.sendCheckpoint(req.params.id, req.body.peer),
        (r) => metrics.sent(r),
      ),
  );
  app.post('/v1/checkpoints/import', { schema: routes.importArchive }, async (req, reply) => {
    const body = req.body as Readable | undefined;
    if (!body || typeof body.pipe !== 'function') {
      throw new FerryError('bad_request', 'send the archive as the request body with content-type application/x-tar');
    }
    const announced = req.headers['x-ferry-checkpoint'];
    return reply.status(201).send(
      await measured(
        metrics,
        'import',
        () => agent.importCheckpoint(body, typeof announced === 'string' ? announced : undefined),
        (m) => metrics.received(m),
      ),
    );
  });
  app.get<{ Params: { id: string } }>('/v1/incoming/:id', { schema: routes.incoming }, async (req) => agent.incoming(req.params.id));
  return app;
}
