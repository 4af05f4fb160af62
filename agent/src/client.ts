/** A typed client of the agent API, for the CLI and the controller. Errors come back as FerryErrors. */
import { Readable } from 'node:stream';
import { FerryError, type ErrorCode, type FerryErrorBody } from './errors.js';
import type { NodeCapabilities } from './criu/probe.js';
import type { Manifest } from './store/manifest.js';
import type { ContainerInfo, RuntimeName } from './runtimes/types.js';
import type { CheckpointParams, RestoreParams, RestoreResult } from './agent.js';

export class AgentClient {
  readonly url: string;
  private readonly token: string;

  constructor(url: string, token: string) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
  }

  private async call(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(this.url + path, {
        method,
        ...init,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...init.headers,
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      throw new FerryError(
        'runtime_unavailable',
        `cannot reach the agent at ${this.url}: ${(err as Error).cause ?? (err as Error).message}`,
        {
          hint: 'start it with `ferry agent` or pass --agent URL',
        },
      );
    }
    if (!res.ok) throw await errorFrom(res);
    return res;
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.call(method, path, body);
    return (res.status === 204 ? undefined : await res.json()) as T;
  }

  health(): Promise<{ ok: boolean; node: string }> {
    return this.json('GET', '/healthz');
  }
  node(refresh = false): Promise<NodeCapabilities> {
    return this.json('GET', `/v1/node${refresh ? '?refresh=true' : ''}`);
  }
  async containers(runtime?: RuntimeName): Promise<ContainerInfo[]> {
    return (await this.json<{ containers: ContainerInfo[] }>('GET', `/v1/containers${runtime ? `?runtime=${runtime}` : ''}`)).containers;
  }
  checkpoint(p: CheckpointParams): Promise<Manifest> {
    return this.json('POST', '/v1/checkpoints', p);
  }
  async checkpoints(): Promise<Manifest[]> {
    return (await this.json<{ checkpoints: Manifest[] }>('GET', '/v1/checkpoints')).checkpoints;
  }
  getCheckpoint(id: string): Promise<Manifest> {
    return this.json('GET', `/v1/checkpoints/${encodeURIComponent(id)}`);
  }
  deleteCheckpoint(id: string): Promise<void> {
    return this.json('DELETE', `/v1/checkpoints/${encodeURIComponent(id)}`);
  }
  restore(id: string, p: RestoreParams = {}): Promise<RestoreResult> {
    return this.json('POST', `/v1/checkpoints/${encodeURIComponent(id)}/restore`, p);
  }
  async exportArchive(id: string): Promise<Readable> {
    const res = await this.call('GET', `/v1/checkpoints/${encodeURIComponent(id)}/archive`);
    if (!res.body) throw new FerryError('internal', 'the agent sent an empty archive');
    return Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
  }
  async importArchive(archive: Readable): Promise<Manifest> {
    const res = await this.call('POST', '/v1/checkpoints/import', undefined, {
      headers: { 'content-type': 'application/x-tar' },
      body: Readable.toWeb(archive) as unknown as BodyInit,
      duplex: 'half',
    } as RequestInit);
    return (await res.json()) as Manifest;
  }
}

async function errorFrom(res: Response): Promise<FerryError> {
  const text = await res.text();
  let body: Partial<FerryErrorBody> = {};
  try {
    body = JSON.parse(text) as FerryErrorBody;
  } catch {
    body = { message: text };
  }
  return new FerryError((body.code as ErrorCode) ?? 'internal', body.message ?? `HTTP ${res.status}`, {
    ...(body.hint ? { hint: body.hint } : {}),
    ...(body.criuLog ? { criuLog: body.criuLog } : {}),
    details: { ...body.details, status: res.status },
  });
}
