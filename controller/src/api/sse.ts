/** Server-sent events on a hijacked fastify reply: the stream format both event routes speak. */
import type { FastifyReply } from 'fastify';

export interface EventStream {
  send(id: number, type: string, data: unknown): void;
  end(): void;
  readonly ended: boolean;
  onClose(fn: () => void): void;
}

/**
 * How often a quiet stream says it is alive. Node's fetch gives up on a body silent for 300 s, and a
 * pre-copy round of a large container under emulation is quiet for minutes (found by the lab benchmark).
 */
export const KEEPALIVE_MS = 15_000;

export function openEventStream(reply: FastifyReply, keepaliveMs = KEEPALIVE_MS): EventStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  // Now, not with the first event: a quiet stream would otherwise keep its client waiting for headers
  // (found by the REST fuzzer: a policy with no run due held GET /policies/:name/events for 30 s).
  res.flushHeaders();
  // A comment line: clients skip it, proxies and fetch see bytes.
  const keepalive = setInterval(() => {
    if (!res.writableEnded) res.write(': keepalive\n\n');
  }, keepaliveMs);
  keepalive.unref();
  res.on('close', () => clearInterval(keepalive));
  return {
    send: (id, type, data) => {
      if (!res.writableEnded) res.write(`id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    end: () => {
      clearInterval(keepalive);
      if (!res.writableEnded) res.end();
    },
    get ended() {
      return res.writableEnded;
    },
    onClose: (fn) => res.on('close', fn),
  };
}
