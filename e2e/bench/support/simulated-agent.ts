/**
 * A SIMULATED agent, for the scheduler benchmark only: an in-process HTTP server that answers the agent
 * API calls the controller makes (probe, health, list containers, checkpoint, get and delete checkpoints)
 * like a real agent would, with the same JSON shapes, but runs no CRIU and keeps no images. A checkpoint
 * "takes" `checkpointMs` of timer time. Never used by the tests that claim to exercise real checkpoints.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SimulatedAgentOptions {
  node: string;
  token: string;
  containers: string[];
  checkpointMs: number;
}

export class SimulatedAgent {
  readonly node: string;
  readonly token: string;
  private readonly server: http.Server;
  private readonly checkpoints = new Map<string, Record<string, unknown>>();
  private containers: { id: string; name: string; runtime: 'runc'; state: 'running' }[];
  private readonly checkpointMs: number;
  /** Calls answered, by route: how much the controller asked of this node. */
  readonly calls = new Map<string, number>();
  url = '';

  constructor(opts: SimulatedAgentOptions) {
    this.node = opts.node;
    this.token = opts.token;
    this.checkpointMs = opts.checkpointMs;
    this.containers = opts.containers.map((name) => ({ id: `${name}-id`, name, runtime: 'runc', state: 'running' }));
    this.server = http.createServer((req, res) => void this.answer(req, res));
    this.server.keepAliveTimeout = 60_000;
  }

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  stored(): number {
    return this.checkpoints.size;
  }

  private async answer(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const url = new URL(req.url ?? '/', 'http://x');
    const route = `${req.method} ${url.pathname.replace(/\/v1\/checkpoints\/[^/]+$/, '/v1/checkpoints/:id')}`;
    this.calls.set(route, (this.calls.get(route) ?? 0) + 1);
    const send = (status: number, body?: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body === undefined ? undefined : JSON.stringify(body));
    };
    if (url.pathname !== '/healthz' && req.headers.authorization !== `Bearer ${this.token}`) {
      return send(401, { code: 'unauthorized', message: 'bad token' });
    }
    const id = decodeURIComponent(url.pathname.split('/')[3] ?? '');
    switch (route) {
      case 'GET /healthz':
        return send(200, { ok: true, node: this.node });
      case 'GET /v1/node':
        return send(200, this.capabilities());
      case 'GET /v1/containers':
        return send(200, { containers: this.containers });
      case 'POST /v1/checkpoints': {
        const p = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id: string; container: string };
        const container = this.containers.find((c) => c.id === p.container || c.name === p.container);
        if (!container) return send(404, { code: 'container_not_found', message: `no container ${p.container}` });
        await new Promise((r) => setTimeout(r, this.checkpointMs));
        const manifest = {
          version: 1,
          id: p.id,
          kind: 'full',
          createdAt: new Date().toISOString(),
          node: this.node,
          container: { id: container.id, name: container.name, runtime: 'runc' },
          criuVersion: '4.1.1',
          leaveRunning: true,
          files: [],
          totalBytes: 4 << 20,
          stats: { frozenTimeMs: Math.max(1, this.checkpointMs / 2) },
          timings: { checkpointMs: this.checkpointMs, sealMs: 0 },
          runtimeMeta: {},
        };
        this.checkpoints.set(p.id, manifest);
        return send(201, manifest);
      }
      case 'GET /v1/checkpoints/:id': {
        const m = this.checkpoints.get(id);
        return m ? send(200, m) : send(404, { code: 'checkpoint_not_found', message: `no checkpoint ${id}` });
      }
      case 'DELETE /v1/checkpoints/:id':
        return this.checkpoints.delete(id) ? send(204) : send(404, { code: 'checkpoint_not_found', message: `no checkpoint ${id}` });
      default:
        return send(404, { code: 'not_found', message: `${route} is not simulated` });
    }
  }

  private capabilities() {
    return {
      node: this.node,
      arch: 'x64',
      kernel: 'simulated',
      criu: { available: true, version: '4.1.1', memDirtyTrack: false, lazyPages: false },
      runtimes: [{ runtime: 'runc', available: true, version: 'simulated' }],
      cpu: { model: 'simulated', flags: [] },
      probedAt: new Date().toISOString(),
    };
  }
}
