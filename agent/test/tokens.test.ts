import test from 'ava';
import { allows, createToken, scopeFor, verifyAuthorization } from '../src/api/tokens.js';

const SECRET = 's3cret-of-the-service';
const bearer = (t: string) => `Bearer ${t}`;
const refusal = (header: string | undefined, now?: number) => {
  const v = verifyAuthorization(header, SECRET, 'agent', now);
  return v.ok ? 'accepted' : v.error.code;
};

test('the secret itself may act and never expires', (t) => {
  const v = verifyAuthorization(bearer(SECRET), SECRET, 'agent');
  t.deepEqual(v, { ok: true, scope: 'act' });
});

test('missing, empty, wrong, prefixed and cut tokens are refused as unauthorized', (t) => {
  t.is(refusal(undefined), 'unauthorized');
  t.is(refusal('Bearer '), 'unauthorized');
  t.is(refusal(SECRET), 'unauthorized', 'the scheme is required');
  t.is(refusal(bearer(`${SECRET}x`)), 'unauthorized');
  t.is(refusal(bearer(SECRET.slice(0, -1))), 'unauthorized');
  t.is(refusal(bearer('fy1.')), 'unauthorized');
  const good = createToken(SECRET, 'read', 60);
  t.is(refusal(bearer(good.slice(0, -2))), 'unauthorized');
});

test('a derived token carries its scope until it expires, then says so', (t) => {
  const now = Date.parse('2026-11-27T00:00:00Z');
  const read = createToken(SECRET, 'read', 3600, now);
  const v = verifyAuthorization(bearer(read), SECRET, 'agent', now + 3599_000);
  t.true(v.ok && v.scope === 'read');
  t.true(v.ok && v.expiresAt?.toISOString() === '2026-11-27T01:00:00.000Z');
  t.is(refusal(bearer(read), now + 3600_000), 'token_expired');
  const expired = verifyAuthorization(bearer(read), SECRET, 'agent', now + 7200_000);
  t.regex(expired.ok ? '' : (expired.error.hint ?? ''), /ferry token create --scope read/);
});

test('a token signed by another secret, or with its claims changed, is refused', (t) => {
  t.is(refusal(bearer(createToken('another-secret', 'act', 60))), 'unauthorized');
  const [, , signature] = createToken(SECRET, 'read', 60).split('.');
  const forged = Buffer.from(JSON.stringify({ scope: 'act', exp: 4102444800, id: 'x' })).toString('base64url');
  t.is(refusal(bearer(`fy1.${forged}.${signature}`)), 'unauthorized', 'read promoted to act keeps no valid signature');
});

test('scopes: reading is GET and HEAD; acting allows everything, reading only reads', (t) => {
  t.is(scopeFor('GET'), 'read');
  t.is(scopeFor('HEAD'), 'read');
  for (const m of ['POST', 'PUT', 'PATCH', 'DELETE']) t.is(scopeFor(m), 'act');
  t.true(allows('act', 'act'));
  t.true(allows('act', 'read'));
  t.true(allows('read', 'read'));
  t.false(allows('read', 'act'));
});

test('a token cannot be made without a scope, a lifetime or a secret', (t) => {
  t.throws(() => createToken(SECRET, 'admin' as 'act', 60), { message: /scope 'admin'/ });
  t.throws(() => createToken(SECRET, 'read', 0), { message: /positive lifetime/ });
  t.throws(() => createToken('', 'read', 60), { message: /no secret/ });
});
