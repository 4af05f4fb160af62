import test from 'ava';
import Fastify from 'fastify';
import { openEventStream } from '../src/api/sse.js';
import { controllerConfig } from '../src/config.js';
import { startController } from '../src/main.js';

// Found by the REST fuzzer: headers were held until the first event, so a quiet stream never "opened".
test('an event stream answers with its headers at once, before any event', async (t) => {
  const c = await startController(controllerConfig({ listen: '127.0.0.1:0', token: 't', database: ':memory:' }), false);
  t.teardown(() => c.close());
  const headers = { authorization: 'Bearer t', 'content-type': 'application/json' };
  const policy = {
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'CheckpointPolicy',
    metadata: { name: 'quiet' },
    spec: { selector: { names: ['nothing'] }, schedule: { every: '1h' }, suspend: true },
  };
  t.is((await fetch(`${c.url}/policies`, { method: 'POST', headers, body: JSON.stringify(policy) })).status, 201);
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  // Bounded by ava's timeout: with the headers held, this never resolves.
  const res = await fetch(`${c.url}/policies/quiet/events`, { headers, signal: abort.signal });
  t.is(res.status, 200);
  t.is(res.headers.get('content-type'), 'text/event-stream');
});

// Found by the lab benchmark: a migration step quiet for minutes would outlast fetch's 300 s body timeout.
test('a quiet event stream sends keepalive comments, which clients skip', async (t) => {
  const app = Fastify();
  app.get('/events', async (_req, reply) => {
    openEventStream(reply, 20);
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const abort = new AbortController();
  t.teardown(() => abort.abort());
  const res = await fetch(`${url}/events`, { signal: abort.signal });
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const first = await reader.read();
  t.is(new TextDecoder().decode(first.value), ': keepalive\n\n');
});
