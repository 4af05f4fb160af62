/**
 * Prometheus metrics shared by both services: one registry per service instance (tests run several in
 * one process, so nothing goes to prom-client's global registry), the process's own figures, and every
 * HTTP request timed by route. GET /metrics needs a read token like every other route: label values name
 * containers and nodes.
 */
import type { FastifyInstance } from 'fastify';
import { collectDefaultMetrics, Counter, Histogram, Registry } from 'prom-client';
import { isFerryError } from '../errors.js';

/** Seconds: from a fast HTTP call to a large checkpoint's transfer. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
/** Bytes: a busybox checkpoint (~100 KiB) to several GiB of memory. */
export const BYTE_BUCKETS = [1 << 16, 1 << 20, 1 << 22, 1 << 24, 1 << 26, 1 << 28, 1 << 30, 2 ** 32];

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export function createRegistry(service: 'agent' | 'controller', labels: Record<string, string> = {}): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service, ...labels });
  collectDefaultMetrics({ register: registry, prefix: 'ferry_' });
  return registry;
}

/** The label a failure is counted under: a FerryError's code, else 'internal'. */
export const failureCode = (err: unknown): string => (isFerryError(err) ? err.code : 'internal');

/** Times one operation into a histogram and counts it by outcome; the operation's result passes through. */
export class OperationMetrics {
  private readonly total: Counter<'operation' | 'result'>;
  private readonly seconds: Histogram<'operation'>;

  constructor(registry: Registry, prefix: string) {
    this.total = new Counter({
      name: `${prefix}_operations_total`,
      help: 'Operations by outcome: ok, or the error code they failed with',
      labelNames: ['operation', 'result'],
      registers: [registry],
    });
    this.seconds = new Histogram({
      name: `${prefix}_operation_duration_seconds`,
      help: 'Wall time of operations that succeeded',
      labelNames: ['operation'],
      buckets: DURATION_BUCKETS,
      registers: [registry],
    });
  }

  async time<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const end = this.seconds.startTimer({ operation });
    try {
      const result = await fn();
      end();
      this.total.inc({ operation, result: 'ok' });
      return result;
    } catch (err) {
      this.total.inc({ operation, result: failureCode(err) });
      throw err;
    }
  }
}

/** Times every request by its route pattern (not its URL: ids would make a series per checkpoint) and serves GET /metrics. */
export function installMetrics(app: FastifyInstance, registry: Registry): void {
  const requests = new Histogram({
    name: 'ferry_http_request_duration_seconds',
    help: 'HTTP requests by method, route pattern and status code',
    labelNames: ['method', 'route', 'status'],
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  app.addHook('onResponse', async (req, reply) => {
    requests.observe(
      { method: req.method, route: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) },
      reply.elapsedTime / 1000,
    );
  });
  app.get('/metrics', { schema: { summary: 'Prometheus metrics (text exposition format)' } }, async (_req, reply) =>
    reply.type(PROMETHEUS_CONTENT_TYPE).send(await registry.metrics()),
  );
}
