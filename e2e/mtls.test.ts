/**
 * mTLS between controller, agents and clients, on real TLS over real TCP between network namespaces:
 * a migration runs with every call and the agent-to-agent transfer over HTTPS with client certificates
 * from the cluster's own CA (made with openssl, as `ferry tls` makes them); clients without a
 * certificate or with one from another CA are refused on every route but the health check (kubelet's
 * probes show none), plain HTTP is not spoken at all; and a service will not serve plain HTTP off this
 * machine unless told to.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent } from 'undici';
import { AgentClient } from '../agent/src/client.js';
import { isFerryError } from '../agent/src/errors.js';
import { initCa, issueCertificate } from '../agent/src/tls/ca.js';
import { loadTlsIdentity } from '../agent/src/tls/identity.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { runcCount, runcRemove, runcState, startCounting } from './support/runc.js';
import { expectCountResumed } from './support/workload.js';

const FERRY = fileURLToPath(new URL('../bin/ferry.js', import.meta.url));
let cluster: TestCluster;
let scratch: string;
const id = `mtls-${process.pid}`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-mtls-'));
  cluster = await startTestCluster(`t${process.pid % 100000}`, ['a', 'b'], {
    runtimes: ['runc'],
    subnet: `10.92.${process.pid % 250}.0/24`,
    tls: true,
  });
});

test.after.always(async () => {
  for (const n of ['a', 'b']) await runcRemove(id, cluster?.node(n).runcRoot);
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const codeOf = (err: unknown) => (isFerryError(err) ? err.code : String(err));

test.serial('a migration over mTLS: controller to agents and agent to agent, all HTTPS with client certificates', async (t) => {
  t.true(cluster.client().url.startsWith('https://'));
  t.true(cluster.node('a').url.startsWith('https://'));
  const before = await startCounting(id, scratch, cluster.node('a').runcRoot);
  const accepted = await cluster.client().migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b' });
  const m = await cluster.finished(accepted.id);
  t.is(m.status, 'succeeded', JSON.stringify(m.error));
  t.true((m.figures.bytesSent ?? 0) > 0, 'the checkpoint went from agent to agent');
  await expectCountResumed(() => runcCount(id, cluster.node('b').runcRoot), before);
  t.is(await runcState(id, cluster.node('a').runcRoot), undefined);
});

test.serial('refused: no client certificate, one from another CA, plain HTTP; the health check stays open for probes', async (t) => {
  const a = cluster.node('a');
  const ca = cluster.tls?.ca as Buffer;
  // Trusts the server, shows nothing: the right token is not enough.
  const anonymous = new Agent({ connect: { ca } });
  const call = (route: string) =>
    fetch(`${a.url}${route}`, { dispatcher: anonymous, headers: { authorization: `Bearer ${a.token}` } } as RequestInit);
  const refused = await call('/v1/checkpoints');
  t.is(refused.status, 401);
  t.regex(((await refused.json()) as { message: string }).message, /no client certificate from this cluster's CA/);
  t.is((await call('/healthz')).status, 200, "kubelet's probe needs no certificate");

  const other = path.join(scratch, 'other-ca');
  await initCa(other);
  const stranger = await loadTlsIdentity(await issueCertificate(other, 'stranger'));
  // Shows a certificate the cluster's CA did not sign (and trusts the cluster's CA to check the server).
  const foreign = new AgentClient(a.url, a.token, { tls: { ...stranger, ca } });
  t.is(codeOf(await t.throwsAsync(foreign.node())), 'unauthorized');
  const controllerStranger = await t.throwsAsync(
    fetch(`${cluster.client().url}/nodes`, {
      dispatcher: new Agent({ connect: { ...stranger, ca } }),
      headers: { authorization: `Bearer ${cluster.controllerToken}` },
    } as RequestInit).then(async (r) => {
      if (r.status === 401) throw new Error('refused with 401');
      return r;
    }),
  );
  t.regex(controllerStranger?.message ?? '', /refused with 401/, 'the controller too');

  const plain = new AgentClient(a.url.replace('https://', 'http://'), a.token);
  t.is(codeOf(await t.throwsAsync(plain.node())), 'node_unreachable');

  // With the cluster's certificate, the same calls pass.
  t.is((await a.agent.node()).node, 'a');
});

test.serial('no plain HTTP off this machine unless asked for; TLS flags come together', async (t) => {
  const env = { ...process.env, FERRY_TOKEN: 'x' };
  const refused = await execa(process.execPath, [FERRY, 'agent', '--listen', '10.255.255.1:7999', '--state-dir', scratch], {
    env,
    reject: false,
    timeout: 30_000,
  });
  t.is(refused.exitCode, 1);
  t.regex(refused.stderr, /refusing to serve the agent over plain HTTP on 10\.255\.255\.1/);
  t.regex(refused.stderr, /hint: give --tls-ca, --tls-cert and --tls-key/);
  const partial = await execa(process.execPath, [FERRY, '--tls-ca', 'x', 'agent', '--listen', '127.0.0.1:0'], {
    env,
    reject: false,
    timeout: 30_000,
  });
  t.regex(partial.stderr, /TLS needs --tls-ca, --tls-cert and --tls-key together; missing --tls-cert, --tls-key/);
});
