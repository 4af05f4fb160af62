import test from 'ava';
import { sample } from '../../e2e/support/metrics.js';
import { createBaseApi } from '../src/api/base.js';
import { createRegistry, OperationMetrics } from '../src/api/metrics.js';
import { FerryError } from '../src/errors.js';

async function serviceWithOneOperation() {
  const registry = createRegistry('agent', { node: 'n1' });
  const operations = new OperationMetrics(registry, 'ferry_test');
  const app = await createBaseApi({
    what: 'test',
    token: 't0k',
    tokenSource: 'test',
    schemas: [],
    logger: false,
    ajvOptions: {},
    metrics: registry,
  });
  app.post<{ Querystring: { fail?: string } }>('/work', async (req) =>
    operations.time('work', async () => {
      if (req.query.fail) throw new FerryError('conflict', 'busy');
      return { ok: true };
    }),
  );
  const call = (url: string, method: 'GET' | 'POST' = 'POST', token = 't0k') =>
    app.inject({ method, url, headers: { authorization: `Bearer ${token}` } });
  return { app, call };
}

test('metrics: operations counted by outcome and timed when they succeed; requests timed by route pattern', async (t) => {
  const { app, call } = await serviceWithOneOperation();
  t.is((await call('/work')).statusCode, 200);
  t.is((await call('/work')).statusCode, 200);
  t.is((await call('/work?fail=1')).statusCode, 409);
  const res = await call('/metrics', 'GET');
  t.is(res.statusCode, 200);
  t.regex(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const text = res.body;
  t.is(sample(text, 'ferry_test_operations_total', { operation: 'work', result: 'ok', service: 'agent', node: 'n1' }), 2);
  t.is(sample(text, 'ferry_test_operations_total', { operation: 'work', result: 'conflict' }), 1);
  t.is(sample(text, 'ferry_test_operation_duration_seconds_count', { operation: 'work' }), 2, 'failures are not timed');
  t.is(sample(text, 'ferry_http_request_duration_seconds_count', { method: 'POST', route: '/work', status: '409' }), 1);
  t.is(sample(text, 'ferry_http_request_duration_seconds_count', { method: 'POST', route: '/work', status: '200' }), 2);
  t.true((sample(text, 'ferry_process_resident_memory_bytes') ?? 0) > 0, 'the process figures are there');
  await app.close();
});

test('metrics: GET /metrics needs the token like every other route', async (t) => {
  const { app, call } = await serviceWithOneOperation();
  const res = await call('/metrics', 'GET', 'wrong');
  t.is(res.statusCode, 401);
  t.is(res.json().code, 'unauthorized');
  await app.close();
});

test('metrics: an unknown URL is timed under one series, not one per URL', async (t) => {
  const { app, call } = await serviceWithOneOperation();
  await call('/no/such/a', 'GET');
  await call('/no/such/b', 'GET');
  const text = (await call('/metrics', 'GET')).body;
  t.is(sample(text, 'ferry_http_request_duration_seconds_count', { route: 'unmatched', status: '404' }), 2);
  t.false(text.includes('/no/such/'));
  await app.close();
});

test('metrics: the sample reader matches names exactly and labels as a subset', (t) => {
  const text = ['# HELP x_total x', 'x_total{a="1",b="q\\"uote"} 3', 'x_total_more{a="1"} 9', 'y 2.5'].join('\n');
  t.is(sample(text, 'x_total', { a: '1' }), 3);
  t.is(sample(text, 'x_total', { b: 'q\\"uote' }), 3);
  t.is(sample(text, 'x_total', { a: '2' }), undefined);
  t.is(sample(text, 'y'), 2.5);
});
