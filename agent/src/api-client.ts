/**
 * The HTTP client every Ferry API shares (agent, controller): bearer token, JSON in and out, and error
 * bodies turned back into FerryErrors with their code, hint and details.
 */
import { FerryError, type ErrorCode, type FerryErrorBody } from './errors.js';

export class ApiClient {
  readonly url: string;
  protected readonly token: string;

  constructor(
    url: string,
    token: string,
    private readonly what = 'the agent',
    private readonly startHint = 'start it with `ferry agent` or pass --agent URL',
  ) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
  }

  protected async call(method: string, path: string, body?: unknown, init: RequestInit = {}): Promise<Response> {
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
        'node_unreachable',
        `cannot reach ${this.what} at ${this.url}: ${(err as Error).cause ?? (err as Error).message}`,
        {
          hint: this.startHint,
        },
      );
    }
    if (!res.ok) throw await errorFrom(res);
    return res;
  }

  protected async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.call(method, path, body);
    return (res.status === 204 ? undefined : await res.json()) as T;
  }
}

export async function errorFrom(res: Response): Promise<FerryError> {
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
