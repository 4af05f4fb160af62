/**
 * Every failure that reaches a user carries a stable machine-readable code, the HTTP status it maps to,
 * and a hint naming the next step. Routes and the CLI render these; nothing else formats errors.
 */
export type ErrorCode =
  | 'bad_request'
  | 'unauthorized'
  | 'token_expired'
  | 'forbidden'
  | 'not_found'
  | 'container_not_found'
  | 'checkpoint_not_found'
  | 'node_not_found'
  | 'image_not_found'
  | 'migration_not_found'
  | 'pod_not_found'
  | 'not_leader'
  | 'timeout'
  | 'runtime_unavailable'
  | 'node_unreachable'
  | 'transfer_failed'
  | 'conflict'
  | 'incompatible_nodes'
  | 'cancelled'
  | 'interrupted'
  | 'container_not_running'
  | 'checkpoint_corrupt'
  | 'key_unavailable'
  | 'criu_failed'
  | 'runtime_failed'
  | 'unsupported'
  | 'internal';

const statusOf: Record<ErrorCode, number> = {
  bad_request: 400,
  unauthorized: 401,
  /** A derived token past its expiry (agent/src/api/tokens.ts). */
  token_expired: 401,
  /** A read-only token on a route that acts. */
  forbidden: 403,
  not_found: 404,
  container_not_found: 404,
  checkpoint_not_found: 404,
  node_not_found: 404,
  image_not_found: 404,
  migration_not_found: 404,
  /** Kubernetes mode: no such pod in the API server. */
  pod_not_found: 404,
  /** Kubernetes mode: only the replica holding the Lease moves pods; another one answers this. */
  not_leader: 503,
  /** Something another system had to do (a pod to start) did not happen in time. */
  timeout: 504,
  runtime_unavailable: 503,
  /** A peer agent or the agent a controller calls does not answer. */
  node_unreachable: 503,
  /** Bytes between agents were lost or damaged on the way. */
  transfer_failed: 502,
  conflict: 409,
  /** Preflight: the target cannot run what the source runs (CRIU older, CPU features missing, runtime absent). */
  incompatible_nodes: 409,
  cancelled: 409,
  /** A controller restart cut a migration short; it was settled from the journal. */
  interrupted: 500,
  container_not_running: 409,
  checkpoint_corrupt: 422,
  /** An encrypted checkpoint on a node without its key (encoding.ts). */
  key_unavailable: 409,
  criu_failed: 500,
  runtime_failed: 500,
  unsupported: 501,
  internal: 500,
};

export interface FerryErrorBody {
  code: ErrorCode;
  message: string;
  hint?: string;
  /** The lines of CRIU's log that explain a CRIU failure. */
  criuLog?: string[];
  details?: Record<string, unknown>;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly criuLog: string[] | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    extra: { hint?: string; criuLog?: string[]; details?: Record<string, unknown>; cause?: unknown } = {},
  ) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'FerryError';
    this.code = code;
    this.hint = extra.hint;
    this.criuLog = extra.criuLog;
    this.details = extra.details;
  }

  get status(): number {
    return statusOf[this.code];
  }

  toJSON(): FerryErrorBody {
    const body: FerryErrorBody = { code: this.code, message: this.message };
    if (this.hint) body.hint = this.hint;
    if (this.criuLog?.length) body.criuLog = this.criuLog;
    if (this.details) body.details = this.details;
    return body;
  }
}

export function isFerryError(err: unknown): err is FerryError {
  return err instanceof FerryError;
}

/** A rejection handler that swallows one error code (an absent thing that is absent is no failure) and rethrows the rest. */
export function ignoring(code: ErrorCode): (err: unknown) => undefined {
  return (err) => {
    if (isFerryError(err) && err.code === code) return undefined;
    throw err;
  };
}
