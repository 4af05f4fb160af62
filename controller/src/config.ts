/** The controller's settings, from flags or the environment, checked once at start-up. */
import { type TlsFiles, tlsFilesFrom } from '../../agent/src/tls/identity.js';
import path from 'node:path';
import { parseListen } from '../../agent/src/config.js';
import { FerryError } from '../../agent/src/errors.js';
import type { KubeModeConfig } from './kube/mode.js';

export interface ControllerConfig {
  host: string;
  port: number;
  token: string;
  /** SQLite file of the embedded store (standalone mode). */
  database: string;
  healthCheckMs: number;
  /**
   * Calls to agents: quick ones (probe, list, delete) fail fast so a silent node is noticed and rollback
   * moves on; long ones (checkpoint, restore, transfer) are bounded too, and agents also end a transfer
   * that stops moving (their own stall limit).
   */
  agentTimeouts: { quickMs: number; longMs: number };
  /** Kubernetes mode (docs/kubernetes.md): CheckpointPolicy objects, one acting replica by Lease. */
  kube?: KubeModeConfig;
  /** mTLS (agent/src/tls/identity.ts): serve only clients with a certificate from this CA, and show ours to agents. */
  tls?: TlsFiles;
  /** Plain HTTP on a non-loopback address, for development on a trusted network. */
  allowPlainHttp?: boolean;
}

export const DEFAULT_CONTROLLER_PORT = 7080;

export function controllerConfig(opts: {
  listen?: string;
  token?: string;
  database?: string;
  healthCheckMs?: number;
  agentTimeouts?: { quickMs: number; longMs: number };
  kube?: KubeModeConfig;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  allowPlainHttp?: boolean;
}): ControllerConfig {
  const tls = tlsFilesFrom(opts);
  const token = opts.token ?? process.env.FERRY_CONTROLLER_TOKEN;
  if (!token) {
    throw new FerryError('bad_request', 'no controller token: --token or FERRY_CONTROLLER_TOKEN is required', {
      hint: 'e.g. export FERRY_CONTROLLER_TOKEN=$(openssl rand -hex 16)',
    });
  }
  return {
    ...parseListen(opts.listen ?? process.env.FERRY_CONTROLLER_LISTEN ?? `127.0.0.1:${DEFAULT_CONTROLLER_PORT}`),
    token,
    database: storePath(opts.database ?? process.env.FERRY_CONTROLLER_DB ?? '/var/lib/ferry/controller.db'),
    healthCheckMs: opts.healthCheckMs ?? 10_000,
    agentTimeouts: opts.agentTimeouts ?? { quickMs: 15_000, longMs: 30 * 60_000 },
    ...(opts.kube ? { kube: opts.kube } : {}),
    ...(tls ? { tls } : {}),
    ...(opts.allowPlainHttp ? { allowPlainHttp: true } : {}),
  };
}

/** SQLite's ':memory:' names no file: resolved as a path it became a file of that name in the working directory. */
function storePath(file: string): string {
  return file === ':memory:' ? file : path.resolve(file);
}
