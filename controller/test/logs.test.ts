import test from 'ava';
import { PassThrough } from 'node:stream';
import { controllerConfig } from '../src/config.js';
import { startController } from '../src/main.js';

test('structured logs: JSON lines, policy events with the policy, requests under the caller x-request-id', async (t) => {
  const stream = new PassThrough();
  const lines: Record<string, unknown>[] = [];
  stream.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
  });
  const c = await startController(controllerConfig({ listen: '127.0.0.1:0', token: 't', database: ':memory:' }), { stream });
  t.teardown(() => c.close());
  const headers = { authorization: 'Bearer t', 'content-type': 'application/json', 'x-request-id': 'm-logs-1' };
  const policy = {
    apiVersion: 'ferry.dev/v1alpha1',
    kind: 'CheckpointPolicy',
    metadata: { name: 'logged' },
    spec: { selector: { names: ['nothing'] }, schedule: { every: '1h' } },
  };
  t.is((await fetch(`${c.url}/policies`, { method: 'POST', headers, body: JSON.stringify(policy) })).status, 201);
  // A new policy runs once at once; its end is the last event this test waits for.
  const finished = await new Promise<Record<string, unknown>>((resolve) => {
    const look = () => lines.find((l) => l.policy === 'logged' && l.event === 'run-finished');
    const found = look();
    if (found) return resolve(found);
    stream.on('data', () => {
      const l = look();
      if (l) resolve(l);
    });
  });
  t.regex(String(finished.msg), /^run \S+ /);
  t.true(
    lines.some((l) => l.policy === 'logged' && l.event === 'run-started'),
    'run start logged with the policy',
  );
  t.true(
    lines.some((l) => l.reqId === 'm-logs-1'),
    "the request is logged under the caller's id",
  );
});
