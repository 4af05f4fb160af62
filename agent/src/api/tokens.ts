/**
 * Who may call a service, and for what. The token a service is started with (its secret) may do
 * everything and never expires: it is what the controller and other agents use. From it, `ferry token
 * create` derives tokens limited in scope and time for people, dashboards and scrapers:
 *
 *   fy1.<base64url payload>.<base64url HMAC-SHA256(secret, "fy1." + payload)>
 *
 * with the payload {"scope": "read"|"act", "exp": unix seconds, "id": random}. Nothing is stored: the
 * service checks the signature with its secret, so changing the secret revokes every derived token.
 * `read` allows GET (lists, records, event streams, metrics); `act` allows everything.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { FerryError } from '../errors.js';

export type Scope = 'read' | 'act';
export const SCOPES: readonly Scope[] = ['read', 'act'];

const PREFIX = 'fy1.';

interface Claims {
  scope: Scope;
  exp: number;
  id: string;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const mac = (secret: string, payload: string) =>
  createHmac('sha256', secret)
    .update(PREFIX + payload)
    .digest();
const digest = (s: string | Buffer) => createHash('sha256').update(s).digest();
/** Equal-length digests compared in constant time, whatever the inputs' lengths. */
const same = (a: string | Buffer, b: string | Buffer) => timingSafeEqual(digest(a), digest(b));

export function createToken(secret: string, scope: Scope, ttlSeconds: number, now = Date.now()): string {
  if (!secret) throw new FerryError('bad_request', 'no secret to sign the token with');
  if (!SCOPES.includes(scope))
    throw new FerryError('bad_request', `scope '${scope}' is not one of ${SCOPES.join(', ')}`, { details: { field: 'scope' } });
  if (!(ttlSeconds > 0)) throw new FerryError('bad_request', 'the token needs a positive lifetime', { details: { field: 'ttl' } });
  const claims: Claims = { scope, exp: Math.floor(now / 1000 + ttlSeconds), id: randomBytes(6).toString('hex') };
  const payload = b64url(JSON.stringify(claims));
  return `${PREFIX}${payload}.${b64url(mac(secret, payload))}`;
}

export type Verdict = { ok: true; scope: Scope; expiresAt?: Date } | { ok: false; error: FerryError };

const refused = (code: 'unauthorized' | 'token_expired', message: string, hint: string): Verdict => ({
  ok: false,
  error: new FerryError(code, message, { hint }),
});

/** Checks an Authorization header against a service's secret: the secret itself, or a token derived from it. */
export function verifyAuthorization(header: string | undefined, secret: string, what: string, now = Date.now()): Verdict {
  const given = /^Bearer (.+)$/.exec(header ?? '')?.[1] ?? '';
  const hint = `send Authorization: Bearer <${what} token>`;
  if (!given) return refused('unauthorized', 'missing bearer token', hint);
  if (same(given, secret)) return { ok: true, scope: 'act' };
  if (!given.startsWith(PREFIX)) return refused('unauthorized', 'wrong bearer token', hint);
  const [payload = '', signature = ''] = given.slice(PREFIX.length).split('.');
  if (!same(Buffer.from(signature, 'base64url'), mac(secret, payload))) {
    return refused('unauthorized', 'bearer token not signed by this service', `${hint}; derived tokens are signed with its secret`);
  }
  let claims: Claims;
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Claims;
  } catch {
    return refused('unauthorized', 'bearer token payload is not JSON', hint);
  }
  if (!SCOPES.includes(claims.scope) || typeof claims.exp !== 'number')
    return refused('unauthorized', 'bearer token has no valid scope or expiry', hint);
  const expiresAt = new Date(claims.exp * 1000);
  if (expiresAt.getTime() <= now) {
    return refused(
      'token_expired',
      `bearer token ${claims.id} expired at ${expiresAt.toISOString()}`,
      `create a new one: ferry token create --scope ${claims.scope}`,
    );
  }
  return { ok: true, scope: claims.scope, expiresAt };
}

/** What a request needs: reading (GET, HEAD) or acting (everything else). */
export const scopeFor = (method: string): Scope => (method === 'GET' || method === 'HEAD' ? 'read' : 'act');

export function allows(granted: Scope, needed: Scope): boolean {
  return granted === 'act' || needed === 'read';
}
