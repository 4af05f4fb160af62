import test from 'ava';
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
