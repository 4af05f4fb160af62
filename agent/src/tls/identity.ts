/**
 * mTLS between Ferry's services: every agent and the controller holds a certificate signed by the
 * cluster's own CA (tls/ca.ts), used both to serve and to call the others. A server asks every client
 * for a certificate from that CA and answers no route but /healthz and /openapi.json without one
 * (api/base.ts; the handshake itself lets them through so that kubelet's probes, which show no
 * certificate, still work). Bearer tokens are checked on top, as before: the certificate says "one of
 * ours", the token says what the caller may do.
 */
import { readFile } from 'node:fs/promises';
import type { SecureContextOptions } from 'node:tls';
import { Agent } from 'undici';
import { FerryError } from '../errors.js';

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface TlsIdentity {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

export async function loadTlsIdentity(files: TlsFiles): Promise<TlsIdentity> {
  const read = (what: keyof TlsFiles) =>
    readFile(files[what]).catch((err: Error) => {
      throw new FerryError('bad_request', `cannot read the TLS ${what} ${files[what]}: ${err.message}`, {
        hint: 'make them with `ferry tls init-ca` and `ferry tls issue` (docs/operations.md)',
        details: { field: `--tls-${what}` },
      });
    });
  const [ca, cert, key] = await Promise.all([read('ca'), read('cert'), read('key')]);
  return { ca, cert, key };
}

/** The three flags come together or not at all. */
export function tlsFilesFrom(opts: { tlsCa?: string; tlsCert?: string; tlsKey?: string }): TlsFiles | undefined {
  const ca = opts.tlsCa ?? process.env.FERRY_TLS_CA;
  const cert = opts.tlsCert ?? process.env.FERRY_TLS_CERT;
  const key = opts.tlsKey ?? process.env.FERRY_TLS_KEY;
  if (!ca && !cert && !key) return undefined;
  const missing = Object.entries({ ca, cert, key })
    .filter(([, v]) => !v)
    .map(([k]) => `--tls-${k}`);
  if (missing.length) {
    throw new FerryError('bad_request', `TLS needs --tls-ca, --tls-cert and --tls-key together; missing ${missing.join(', ')}`, {
      details: { field: missing[0] },
    });
  }
  return { ca: ca as string, cert: cert as string, key: key as string };
}

const common = (id: TlsIdentity): SecureContextOptions => ({ ca: id.ca, cert: id.cert, key: id.key, minVersion: 'TLSv1.3' });

/** Serving: every client is asked for a certificate; whether it showed a valid one is checked per request. */
export const serverTlsOptions = (id: TlsIdentity) => ({ ...common(id), requestCert: true, rejectUnauthorized: false });

/** Calling: our certificate to show, our CA to check the server against (and its name or address). */
export const clientTlsOptions = (id: TlsIdentity) => common(id);

const dispatchers = new WeakMap<TlsIdentity, Agent>();

/** fetch's connection pool for one identity (undici, the fetch built into Node). */
export function dispatcherFor(id: TlsIdentity): Agent {
  let agent = dispatchers.get(id);
  if (!agent) {
    agent = new Agent({ connect: clientTlsOptions(id) });
    dispatchers.set(id, agent);
  }
  return agent;
}

/** Plain HTTP off this machine is refused unless asked for: tokens and checkpoints would cross the network in the clear. */
export function checkPlainHttp(host: string, tls: unknown, allowPlainHttp: boolean | undefined, what: string): string | undefined {
  if (tls) return undefined;
  const loopback = host === 'localhost' || host === '::1' || host.startsWith('127.');
  if (!loopback && !allowPlainHttp) {
    throw new FerryError(
      'bad_request',
      `refusing to serve the ${what} over plain HTTP on ${host}: tokens and checkpoints would cross the network in the clear`,
      {
        hint: 'give --tls-ca, --tls-cert and --tls-key (ferry tls init-ca / ferry tls issue), or --allow-plain-http on a network you trust',
        details: { field: '--tls-cert' },
      },
    );
  }
  return `WARNING: the ${what} serves plain HTTP on ${host}${loopback ? ' (this machine only)' : ''}: tokens and checkpoints travel unencrypted. Use --tls-* outside development.`;
}
