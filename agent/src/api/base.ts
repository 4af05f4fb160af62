/**
 * What every Ferry HTTP API shares (agent, controller): the OpenAPI document, the shared schemas, one
 * error shape, and a bearer token on every route but health and the document.
 */
import type { TLSSocket } from 'node:tls';
import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import { FerryError } from '../errors.js';
import { installErrorHandling } from './errors.js';
import { installMetrics } from './metrics.js';
import { allows, scopeFor, verifyAuthorization } from './tokens.js';
import { serverTlsOptions, type TlsIdentity } from '../tls/identity.js';

const OPEN_ROUTES = new Set(['/healthz', '/openapi.json']);

export type Logging = boolean | { stream: NodeJS.WritableStream };

export interface BaseApiOptions {
  /** e.g. 'agent': names the API in its document and the token in errors. */
  what: string;
  token: string;
  /** Where the token comes from, for the error when it is missing. */
  tokenSource: string;
  schemas: readonly object[];
  /** JSON lines (pino) to stdout, or to this stream; false: none. */
  logger: Logging;
  ajvOptions: Record<string, unknown>;
  /** Served at GET /metrics, with every request timed into it. */
  metrics: Registry;
  /** mTLS: only clients with a certificate from this identity's CA connect (tls/identity.ts). */
  tls?: TlsIdentity;
}

export async function createBaseApi(o: BaseApiOptions): Promise<FastifyInstance> {
  if (!o.token) throw new FerryError('bad_request', `the ${o.what} needs a token`, { hint: `set ${o.tokenSource}` });
  // Fastify types an HTTPS server differently; the routes are the same.
  const app = Fastify({
    logger: typeof o.logger === 'object' ? { stream: o.logger.stream } : o.logger,
    // A caller's x-request-id (e.g. a migration's id) names the request in this service's log too.
    requestIdHeader: 'x-request-id',
    ajv: { customOptions: o.ajvOptions },
    ...(o.tls ? { https: serverTlsOptions(o.tls) } : {}),
  }) as unknown as FastifyInstance;
  await app.register(swagger, {
    openapi: {
      info: { title: `Ferry ${o.what} API`, version: '1' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });
  for (const s of o.schemas) app.addSchema(s);
  installErrorHandling(app);
  app.addHook('onRequest', async (req) => {
    if (OPEN_ROUTES.has(req.routeOptions.url ?? '')) return;
    if (o.tls && !(req.socket as TLSSocket).authorized) {
      throw new FerryError('unauthorized', "no client certificate from this cluster's CA (mTLS)", {
        hint: 'call with --tls-ca, --tls-cert and --tls-key (a certificate from `ferry tls issue`)',
      });
    }
    const verdict = verifyAuthorization(req.headers.authorization, o.token, o.what);
    if (!verdict.ok) throw verdict.error;
    const needed = scopeFor(req.method);
    if (!allows(verdict.scope, needed)) {
      throw new FerryError('forbidden', `a ${verdict.scope} token may not ${req.method} ${req.routeOptions.url ?? req.url}`, {
        hint: `use a token with scope ${needed}: ferry token create --scope ${needed}`,
      });
    }
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  installMetrics(app, o.metrics);
  return app;
}
