/**
 * The HTTP client every Ferry API shares (agent, controller): bearer token, JSON in and out, and error
 * bodies turned back into FerryErrors with their code, hint and details.
 */
import { FerryError, type ErrorCode, type FerryErrorBody } from './errors.js';

/**
 * How long a call may take. Quick calls (listing, probing, deleting) fail fast so that a node that went
 * silent is noticed; long calls (checkpoint, restore, transfer) scale with the workload and get their own.
 */
export interface ClientTimeouts {
  quickMs?: number;
  longMs?: number;
}

export interface ApiClientOptions {
  /** How the server is named in errors, e.g. 'the agent'. */
  what?: string;
  /** The next step when the server cannot be reached. */
  startHint?: string;
  timeouts?: ClientTimeouts;
}

export class ApiClient {
  readonly url: string;
  protected readonly token: string;
  private readonly what: string;
  private readonly startHint: string;
  private readonly timeouts: ClientTimeouts;

  constructor(url: string, token: string, opts: ApiClientOptions = {}) {
    this.url = url.replace(/\/+$/, '');
    this.token = token;
    this.what = opts.what ?? 'the agent';
    this.startHint = opts.startHint ?? 'start it with `ferry agent` or pass --agent URL';
    this.timeouts = opts.timeouts ?? {};
  }

  protected async call(method: string, path: string, body?: unknown, init: RequestInit = {}, long = false): Promise<Response> {
    const limit = long ? this.timeouts.longMs : this.timeouts.quickMs;
    const signals = [init.signal, limit ? AbortSignal.timeout(limit) : undefined].filter((s): s is AbortSignal => Boolean(s));
    let res: Response;
    try {
      res = await fetch(this.url + path, {
        method,
        ...init,
        ...(signals.length ? { signal: AbortSignal.any(signals) } : {}),
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...init.headers,
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (err) {
      const timedOut = (err as Error).name === 'TimeoutError';
      throw new FerryError(
        'node_unreachable',
        timedOut
          ? `${this.what} at ${this.url} did not answer ${method} ${path} within ${limit} ms`
          : `cannot reach ${this.what} at ${this.url}: ${(err as Error).cause ?? (err as Error).message}`,
        { hint: this.startHint },
      );
    }
    if (!res.ok) throw await errorFrom(res);
    return res;
  }

  protected async json<T>(method: string, path: string, body?: unknown, long = false): Promise<T> {
    const res = await this.call(method, path, body, {}, long);
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
