/**
 * REST fuzzing of both services from their own OpenAPI documents (fast-check): for every route, N
 * generated requests, mostly shaped as the schema wants so they reach the code behind validation, some
 * hostile. Properties: no 500 (a 5xx that names a cause outside the request, such as a runtime this node
 * lacks or a peer that does not answer, is an answer, not a crash), every error has the one error shape,
 * the service still answers afterwards, and no file named from a request appears anywhere outside the
 * image store. Real services over real HTTP: an agent with runc on a private, empty runc root, and a
 * standalone controller with that agent registered as a node.
 *
 *   FERRY_FUZZ_RUNS=500 npx ava e2e/rest-fuzz.test.ts     # npm run test:fuzz
 */
import test from 'ava';
import { execa } from 'execa';
import fc from 'fast-check';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import tar from 'tar-stream';
import { agentConfig } from '../agent/src/config.js';
import { startAgent } from '../agent/src/main.js';
import { controllerConfig } from '../controller/src/config.js';
import { type RunningController, startController } from '../controller/src/main.js';
import { type GeneratedRequest, hostileStrings, type OpenApiDocument, requestsFor } from './support/fuzz/arbitrary.js';

const RUNS = Number(process.env.FERRY_FUZZ_RUNS ?? 50);
/** Bounded: a route whose requests take longer than this in all fails the run rather than hang it. */
const ROUTE_LIMIT_MS = Number(process.env.FERRY_FUZZ_ROUTE_LIMIT_MS ?? 120_000);
/** 5xx answers that name a cause outside the request; anything else of 5xx is a bug. */
const ANSWERS_NOT_CRASHES = new Set(['runtime_unavailable', 'node_unreachable', 'unsupported', 'transfer_failed', 'not_leader']);
const marker = `fuzzmark${randomBytes(4).toString('hex')}`;

interface Service {
  name: string;
  url: string;
  token: string;
}

let scratch: string;
let imageRoot: string;
let agent: Awaited<ReturnType<typeof startAgent>>;
let controller: RunningController;
const services: Service[] = [];
/** Per service, per route: how many requests ended with each status. */
const outcomes = new Map<string, Map<string, Map<number, number>>>();

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-fuzz-'));
  const runcRoot = path.join(scratch, 'runc');
  await mkdir(runcRoot);
  const agentToken = randomBytes(16).toString('hex');
  const stateDir = path.join(scratch, 'agent');
  imageRoot = path.join(stateDir, 'images');
  agent = await startAgent(
    agentConfig({ listen: '127.0.0.1:0', token: agentToken, node: 'fz', stateDir, runtimes: 'runc', runcRoot }),
    false,
  );
  services.push({ name: 'agent', url: agent.url, token: agentToken });
  const controllerToken = randomBytes(16).toString('hex');
  controller = await startController(
    controllerConfig({
      listen: '127.0.0.1:0',
      token: controllerToken,
      database: ':memory:',
      agentTimeouts: { quickMs: 2_000, longMs: 10_000 },
    }),
    false,
  );
  await controller.nodes.register('fz', agent.url, agentToken);
  services.push({ name: 'controller', url: controller.url, token: controllerToken });
});

test.after.always(async () => {
  await controller?.close();
  await agent?.app.close();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

/** Archives for the import route, as data (so a failing case prints readably): entries named from the hostile list among a checkpoint's own names. */
const archiveEntries = fc.array(
  fc.record({
    name: fc.constantFrom('manifest.json', 'checkpoint/inventory.img', 'checkpoint/parent', ...hostileStrings(marker).filter(Boolean)),
    body: fc.oneof(
      fc.string({ maxLength: 64 }),
      fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)),
    ),
    symlink: fc.boolean(),
  }),
  { maxLength: 5 },
);

type ArchiveEntry = { name: string; body: string; symlink: boolean };

async function archiveOf(entries: ArchiveEntry[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.symlink) pack.entry({ name: e.name, type: 'symlink', linkname: `../../../tmp/${marker}` });
    else pack.entry({ name: e.name }, Buffer.from(e.body));
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function send(
  s: Service,
  method: string,
  req: GeneratedRequest,
  entries?: ArchiveEntry[],
): Promise<{ status: number; body: unknown }> {
  const query = new URLSearchParams(Object.entries(req.query).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]));
  const archive = entries ? await archiveOf(entries) : undefined;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), 30_000);
  try {
    const res = await fetch(`${s.url}${req.path}${query.size ? `?${query}` : ''}`, {
      method,
      signal: abort.signal,
      headers: {
        authorization: `Bearer ${s.token}`,
        ...(archive ? { 'content-type': 'application/x-tar' } : req.body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(archive ? { body: archive } : req.body !== undefined ? { body: JSON.stringify(req.body) } : {}),
    } as RequestInit);
    const type = res.headers.get('content-type') ?? '';
    // Event streams and archives are cut once their headers are in: the status is what is checked.
    const body = type.startsWith('application/json') ? await res.json() : undefined;
    return { status: res.status, body };
  } finally {
    clearTimeout(timer);
    abort.abort();
  }
}

function tally(service: string, route: string, status: number): void {
  const byRoute = outcomes.get(service) ?? new Map<string, Map<number, number>>();
  const byStatus = byRoute.get(route) ?? new Map<number, number>();
  byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  byRoute.set(route, byStatus);
  outcomes.set(service, byRoute);
}

for (const name of ['agent', 'controller']) {
  test.serial(`${name}: ${RUNS} generated requests per route: no 500, one error shape, still answering`, async (t) => {
    t.timeout(10 * 60_000);
    const s = services.find((x) => x.name === name) as Service;
    const doc = (await (await fetch(`${s.url}/openapi.json`)).json()) as OpenApiDocument;
    const ctx = { doc, marker, loopbackUrls: ['http://127.0.0.1:65500', `${agent.url}`, `${agent.url}/../..`] };
    let requests = 0;
    for (const [route, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const verb = method.toUpperCase();
        const what = `${verb} ${route}`;
        const isImport = route.endsWith('/import');
        await fc.assert(
          fc.asyncProperty(requestsFor(route, op, ctx), isImport ? archiveEntries : fc.constant(undefined), async (req, entries) => {
            const res = await send(s, verb, req, entries);
            requests++;
            tally(name, what, res.status);
            const code = (res.body as { code?: string } | undefined)?.code;
            if (res.status >= 400) {
              if (typeof code !== 'string' || typeof (res.body as { message?: unknown }).message !== 'string') {
                throw new Error(
                  `${what} ${req.path.slice(0, 200)}: ${res.status} without the error shape: ${JSON.stringify(res.body).slice(0, 600)}`,
                );
              }
            }
            if (res.status >= 500 && !ANSWERS_NOT_CRASHES.has(code ?? '')) {
              throw new Error(`${what} ${req.path.slice(0, 200)}: ${res.status} ${JSON.stringify(res.body).slice(0, 600)}`);
            }
          }),
          {
            numRuns: RUNS,
            endOnFailure: true,
            includeErrorInReport: true,
            interruptAfterTimeLimit: ROUTE_LIMIT_MS,
            markInterruptAsFailure: true,
          },
        );
      }
    }
    const health = await fetch(`${s.url}/healthz`);
    t.is(health.status, 200, `${name} still answers after ${requests} requests`);
    t.true(requests >= RUNS * 10);
    t.log(matrix(name));
  });
}

test.serial('no file named from a request was created outside the image store', async (t) => {
  const where = ['/tmp', '/var/tmp', '/etc', '/root', '/var/lib', process.cwd(), scratch];
  const { stdout } = await execa('find', [...where, '-xdev', '-maxdepth', '5', '-name', `*${marker}*`], { reject: false });
  const outside = stdout
    .split('\n')
    .filter(Boolean)
    .filter((f) => !f.startsWith(`${imageRoot}/`));
  t.deepEqual(outside, []);
});

function matrix(service: string): string {
  const rows = [...(outcomes.get(service) ?? [])].map(
    ([route, counts]) =>
      `  ${route.padEnd(48)} ${[...counts]
        .sort(([a], [b]) => a - b)
        .map(([status, n]) => `${status} x${n}`)
        .join(', ')}`,
  );
  return [`${service}: requests per route by status`, ...rows].join('\n');
}
