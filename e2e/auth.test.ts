/**
 * Every route of both services, as their OpenAPI documents list them, refuses missing, wrong, foreign and
 * expired credentials, refuses read-only tokens where it acts, and lets the right token through (to
 * whatever the route then says of the dummy request). Real services over real HTTP: an agent (no runtime
 * is needed to be refused) and a standalone controller on an in-memory store.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { Agent } from '../agent/src/agent.js';
import { buildAgentApi } from '../agent/src/api/server.js';
import { createToken } from '../agent/src/api/tokens.js';
import { ImageStore } from '../agent/src/store/store.js';
import { controllerConfig } from '../controller/src/config.js';
import { type RunningController, startController } from '../controller/src/main.js';

interface Service {
  name: string;
  url: string;
  secret: string;
}

const OPEN = new Set(['/healthz', '/openapi.json']);
const HOUR = 3600;
let scratch: string;
let agentApp: FastifyInstance;
let controller: RunningController;
const services: Service[] = [];

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-auth-'));
  const store = new ImageStore(path.join(scratch, 'images'));
  await store.init();
  const agentSecret = randomBytes(16).toString('hex');
  agentApp = await buildAgentApi({ agent: new Agent({ node: 'auth', store, drivers: [] }), token: agentSecret });
  services.push({ name: 'agent', url: await agentApp.listen({ host: '127.0.0.1', port: 0 }), secret: agentSecret });
  const controllerSecret = randomBytes(16).toString('hex');
  controller = await startController(controllerConfig({ listen: '127.0.0.1:0', token: controllerSecret, database: ':memory:' }), false);
  services.push({ name: 'controller', url: controller.url, secret: controllerSecret });
});

test.after.always(async () => {
  await agentApp?.close();
  await controller?.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Every (method, path) a service documents, path parameters filled with a name that exists nowhere. */
async function routesOf(s: Service): Promise<{ method: string; path: string }[]> {
  const doc = (await (await fetch(`${s.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
  return Object.entries(doc.paths).flatMap(([p, methods]) =>
    Object.keys(methods)
      .filter((m) => ['get', 'post', 'put', 'patch', 'delete'].includes(m))
      .map((m) => ({ method: m.toUpperCase(), path: p.replace(/\{[^}]+\}/g, 'nothing-here') })),
  );
}

/** Status and error code only: event streams are cut as soon as their headers arrive. */
async function call(s: Service, method: string, route: string, token?: string): Promise<{ status: number; code?: string }> {
  const abort = new AbortController();
  const res = await fetch(s.url + route, {
    method,
    signal: abort.signal,
    headers: {
      ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
      ...(method !== 'GET' ? { 'content-type': 'application/json' } : {}),
    },
    ...(method !== 'GET' && method !== 'DELETE' ? { body: '{}' } : {}),
  });
  const json = res.headers.get('content-type')?.startsWith('application/json');
  const code = json ? ((await res.json()) as { code?: string }).code : undefined;
  abort.abort();
  return { status: res.status, ...(code ? { code } : {}) };
}

for (const name of ['agent', 'controller']) {
  test(`${name}: every route refuses missing, wrong, foreign and expired credentials, and read tokens where it acts`, async (t) => {
    const s = services.find((x) => x.name === name) as Service;
    const routes = (await routesOf(s)).filter((r) => !OPEN.has(r.path));
    t.true(routes.length >= (name === 'agent' ? 14 : 15), `the document lists the routes (${routes.length})`);
    t.true(routes.some((r) => r.path === '/metrics'));
    const expired = createToken(s.secret, 'act', HOUR, Date.now() - 2 * HOUR * 1000);
    const foreign = createToken(randomBytes(16).toString('hex'), 'act', HOUR);
    const read = createToken(s.secret, 'read', HOUR);
    const act = createToken(s.secret, 'act', HOUR);
    const checked: string[] = [];
    for (const r of routes) {
      const what = `${r.method} ${r.path}`;
      t.deepEqual(await call(s, r.method, r.path), { status: 401, code: 'unauthorized' }, `${what} without a token`);
      t.deepEqual(await call(s, r.method, r.path, 'wrong'), { status: 401, code: 'unauthorized' }, `${what} with a wrong token`);
      t.deepEqual(await call(s, r.method, r.path, foreign), { status: 401, code: 'unauthorized' }, `${what} with another service's token`);
      t.deepEqual(await call(s, r.method, r.path, expired), { status: 401, code: 'token_expired' }, `${what} with an expired token`);
      const withRead = await call(s, r.method, r.path, read);
      if (r.method === 'GET') t.false([401, 403].includes(withRead.status), `${what} reads with a read token: ${JSON.stringify(withRead)}`);
      else t.deepEqual(withRead, { status: 403, code: 'forbidden' }, `${what} acts: a read token is not enough`);
      for (const token of [act, s.secret]) {
        const allowed = await call(s, r.method, r.path, token);
        t.false([401, 403].includes(allowed.status), `${what} with an act token: ${JSON.stringify(allowed)}`);
      }
      checked.push(what);
    }
    t.log(`${checked.length} routes: ${checked.join(', ')}`);
  });
}
