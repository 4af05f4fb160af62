/**
 * Checkpoints sent between agents through SSH, against a real OpenSSH server in the target node's network
 * namespace: a migration to a node registered with SSH goes through the tunnel (sshd logs the key it
 * accepted); a host key other than the pinned one and a key the node does not accept are refused, and the
 * container keeps running where it was; bad CLI flags are named.
 */
import test from 'ava';
import { execa } from 'execa';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isFerryError } from '../agent/src/errors.js';
import { openTunnel } from '../agent/src/ssh-tunnel.js';
import type { MigrationEvent } from '../controller/src/migration/types.js';
import { startTestCluster, type TestCluster } from './support/cluster.js';
import { runcCount, runcRemove, runcState, startCounting } from './support/runc.js';
import { makeSshKey, SSHD_PORT, type SshKey, startSshd, type TestSshd } from './support/sshd.js';
import { expectCountResumed } from './support/workload.js';

const FERRY = fileURLToPath(new URL('../bin/ferry.js', import.meta.url));
let cluster: TestCluster;
let scratch: string;
let agentKey: SshKey;
let sshd: TestSshd;
const started: string[] = [];
const tag = `s${process.pid % 100000}`;

test.before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ferry-ssh-'));
  agentKey = await makeSshKey(path.join(scratch, 'agent-key'));
  cluster = await startTestCluster(tag, ['a', 'b'], {
    runtimes: ['runc'],
    subnet: `10.77.${process.pid % 250}.0/24`,
    agentArgs: (node) => (node === 'a' ? ['--ssh-key', agentKey.file] : []),
  });
  sshd = await startSshd(cluster.net, 'b', path.join(scratch, 'sshd'), agentKey);
});

test.after.always(async () => {
  for (const n of ['a', 'b']) for (const id of started) await runcRemove(id, cluster?.node(n).runcRoot);
  await sshd?.process.stop();
  await cluster?.destroy();
  if (scratch) await rm(scratch, { recursive: true, force: true });
});

const sshTo = (hostKey: string) => ({ host: cluster.net.node('b').address, port: SSHD_PORT, username: 'root', hostKey });

async function counterOnA(what: string): Promise<{ id: string; before: number }> {
  const id = `ssh-${what}-${process.pid}`;
  started.push(id);
  return { id, before: await startCounting(id, scratch, cluster.node('a').runcRoot) };
}

async function migrateToB(id: string) {
  const accepted = await cluster
    .client()
    .migrate({ container: { node: 'a', runtime: 'runc', name: id }, targetNode: 'b', strategy: 'stopcopy' });
  const m = await cluster.finished(accepted.id);
  const events: MigrationEvent[] = [];
  // The migration has finished: its stream replays every event and ends.
  for await (const e of cluster.client().events(accepted.id)) events.push(e);
  return { m, events };
}

test.serial('a node registered with SSH gets its checkpoints through the tunnel; the migration succeeds', async (t) => {
  const b = cluster.node('b');
  const registered = await cluster.client().registerNode('b', b.url, b.token, sshTo(sshd.hostKey.fingerprint));
  t.is(registered.ssh?.hostKey, sshd.hostKey.fingerprint);
  const { id, before } = await counterOnA('move');

  const { m, events } = await migrateToB(id);
  t.is(m.status, 'succeeded', JSON.stringify(m.error));
  t.true(events.some((e) => e.step === 'transfer' && /over SSH to /.test(e.message)));
  t.regex(sshd.process.output(), new RegExp(`Accepted publickey for root .* ED25519 ${agentKey.fingerprint.replace(/[+/]/g, '\\$&')}`));
  await expectCountResumed(() => runcCount(id, b.runcRoot), before);
  t.is(await runcState(id, cluster.node('a').runcRoot), undefined);
});

test.serial('a host key other than the pinned one is refused: the transfer fails and the container runs on at a', async (t) => {
  const b = cluster.node('b');
  // A well-formed fingerprint of another key: what a man in the middle would present.
  await cluster.client().registerNode('b', b.url, b.token, sshTo(agentKey.fingerprint));
  const { id } = await counterOnA('mitm');
  const { m } = await migrateToB(id);
  t.is(m.status, 'failed');
  t.is(m.error?.step, 'transfer');
  t.regex(m.error?.message ?? '', new RegExp(`its host key is ${sshd.hostKey.fingerprint.replace(/[+/]/g, '\\$&')}, not the pinned`));
  t.is(await runcState(id, cluster.node('a').runcRoot), 'running');
  t.deepEqual(await b.agent.checkpoints(), [], 'nothing reached b');
});

test.serial('a key the node does not accept is refused, naming the fix', async (t) => {
  const stranger = await makeSshKey(path.join(scratch, 'stranger-key'));
  const err = await t.throwsAsync(openTunnel(sshTo(sshd.hostKey.fingerprint), await readFile(stranger.file), cluster.node('b').url, 5_000));
  t.is(isFerryError(err) ? err.code : String(err), 'transfer_failed');
  t.regex(err?.message ?? '', /refused this agent's key/);
  t.regex(isFerryError(err) ? (err.hint ?? '') : '', /authorized_keys/);
});

test.serial('CLI: nodes add names a bad --ssh or --ssh-host-key', async (t) => {
  const ferry = (...args: string[]) =>
    execa(process.execPath, [FERRY, '--controller', cluster.client().url, '--controller-token', cluster.controllerToken, ...args], {
      reject: false,
    });
  const b = cluster.node('b');
  const addB = (ssh: string, hostKey: string) =>
    ferry('nodes', 'add', 'b', b.url, '--node-token', b.token, '--ssh', ssh, '--ssh-host-key', hostKey);
  const badKey = await addB('root@10.0.0.1', 'MD5:xx');
  t.not(badKey.exitCode, 0);
  t.regex(badKey.stderr, /--ssh-host-key 'MD5:xx' is not a SHA256:\.\.\. fingerprint/);
  const badRoute = await addB('not a route', sshd.hostKey.fingerprint);
  t.regex(badRoute.stderr, /--ssh 'not a route' is not user@host\[:port\]/);
  const ok = await addB(`root@${cluster.net.node('b').address}:${SSHD_PORT}`, sshd.hostKey.fingerprint);
  t.is(ok.exitCode, 0, ok.stderr);
  t.regex(ok.stdout, /transfers over SSH to root@/);
});
