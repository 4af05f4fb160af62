/** The agent's settings, from flags or the environment, checked once at start-up. */
import os from 'node:os';
import path from 'node:path';
import { FerryError } from './errors.js';
import { RUNTIME_NAMES, type RuntimeName } from './runtimes/types.js';

import { COMPRESSIONS, type Compression } from './store/encoding.js';
import { type TlsFiles, tlsFilesFrom } from './tls/identity.js';
export interface AgentConfig {
  host: string;
  port: number;
  token: string;
  node: string;
  stateDir: string;
  runtimes: RuntimeName[];
  /** runc's state root; on Kubernetes nodes the CRI runtime's root, e.g. /run/containerd/runc/k8s.io. */
  runcRoot?: string;
  /**
   * A podman store of this agent's own (`podman --root`), for several nodes on one machine; unset, the
   * host's default store. See podmanStoreArgs for why runroot defaults to a directory under /run.
   */
  podmanRoot?: string;
  /** podman's `--runroot` for podmanRoot; only with podmanRoot. */
  podmanRunroot?: string;
  criu: string;
  dockerSocket?: string;
  /** A transfer between agents fails after this long without progress. */
  transferStallMs?: number;
  /** Private key for sending to peers reached over SSH (ssh-tunnel.ts). */
  sshKeyPath?: string;
  /** Kept checkpoints compressed with this (store/encoding.ts). */
  compression?: Compression;
  /** Kept checkpoints encrypted with the 32-byte key in this file. */
  imageKeyPath?: string;
  /** mTLS (tls/identity.ts): serve only clients with a certificate from this CA, and show ours to peers. */
  tls?: TlsFiles;
  /** Plain HTTP on a non-loopback address, for development on a trusted network. */
  allowPlainHttp?: boolean;
}

export const DEFAULT_AGENT_PORT = 7070;

export function parseListen(listen: string): { host: string; port: number } {
  const m = /^(?:\[?([^\]]*)\]?:)?(\d{1,5})$/.exec(listen);
  const port = Number(m?.[2]);
  if (!m || port < 0 || port > 65535) {
    throw new FerryError('bad_request', `--listen '${listen}' is not HOST:PORT`, { hint: 'e.g. --listen 127.0.0.1:7070' });
  }
  return { host: m[1] || '127.0.0.1', port };
}

export function parseRuntimes(list: string): RuntimeName[] {
  const names = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = names.filter((n) => !(RUNTIME_NAMES as readonly string[]).includes(n));
  if (bad.length || !names.length) {
    throw new FerryError('bad_request', `--runtimes '${list}' names unknown runtimes: ${bad.join(', ') || '(none given)'}`, {
      hint: `choose from ${RUNTIME_NAMES.join(', ')}`,
    });
  }
  return names as RuntimeName[];
}

export function agentConfig(opts: {
  listen?: string;
  token?: string;
  node?: string;
  stateDir?: string;
  runtimes?: string;
  runcRoot?: string;
  podmanRoot?: string;
  podmanRunroot?: string;
  criu?: string;
  dockerSocket?: string;
  transferStallMs?: string;
  sshKey?: string;
  compress?: string;
  imageKey?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  allowPlainHttp?: boolean;
}): AgentConfig {
  const tls = tlsFilesFrom(opts);
  const token = opts.token ?? process.env.FERRY_TOKEN;
  if (!token)
    throw new FerryError('bad_request', 'no agent token: --token or FERRY_TOKEN is required', {
      hint: 'e.g. export FERRY_TOKEN=$(openssl rand -hex 16)',
    });
  // A runroot of its own on the default store would split that store's mount counts and locks in two.
  if (opts.podmanRunroot && !opts.podmanRoot)
    throw new FerryError('bad_request', '--podman-runroot needs --podman-root', {
      hint: 'give the store its root too, or drop --podman-runroot',
    });
  return {
    ...parseListen(opts.listen ?? process.env.FERRY_LISTEN ?? `127.0.0.1:${DEFAULT_AGENT_PORT}`),
    token,
    node: opts.node ?? process.env.FERRY_NODE ?? os.hostname(),
    stateDir: path.resolve(opts.stateDir ?? process.env.FERRY_STATE_DIR ?? '/var/lib/ferry'),
    runtimes: parseRuntimes(opts.runtimes ?? process.env.FERRY_RUNTIMES ?? RUNTIME_NAMES.join(',')),
    ...(opts.runcRoot ? { runcRoot: opts.runcRoot } : {}),
    ...(opts.podmanRoot ? { podmanRoot: path.resolve(opts.podmanRoot) } : {}),
    ...(opts.podmanRunroot ? { podmanRunroot: path.resolve(opts.podmanRunroot) } : {}),
    criu: opts.criu ?? process.env.FERRY_CRIU ?? 'criu',
    ...(opts.dockerSocket ? { dockerSocket: opts.dockerSocket } : {}),
    ...(opts.transferStallMs ? { transferStallMs: positiveMs(opts.transferStallMs, '--transfer-stall-ms') } : {}),
    ...(opts.sshKey ? { sshKeyPath: path.resolve(opts.sshKey) } : {}),
    ...(tls ? { tls } : {}),
    ...(opts.allowPlainHttp ? { allowPlainHttp: true } : {}),
    compression: parseCompression(opts.compress ?? process.env.FERRY_COMPRESS ?? 'none'),
    ...((opts.imageKey ?? process.env.FERRY_IMAGE_KEY_FILE)
      ? { imageKeyPath: path.resolve(opts.imageKey ?? process.env.FERRY_IMAGE_KEY_FILE ?? '') }
      : {}),
  };
}

function parseCompression(value: string): Compression {
  if ((COMPRESSIONS as readonly string[]).includes(value)) return value as Compression;
  throw new FerryError('bad_request', `--compress '${value}' is not one of ${COMPRESSIONS.join(', ')}`, {
    details: { field: '--compress' },
  });
}

function positiveMs(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) {
    throw new FerryError('bad_request', `${flag} must be a positive integer of milliseconds, got '${value}'`, { details: { field: flag } });
  }
  return n;
}
