/**
 * Leader election (controller/src/kube/leader.ts) between controller replicas, on a Lease in the API
 * stand-in through the real client: one leads; a leader cut off from the API server stops acting before
 * another takes over (never two at once); a leader that stops gives the lease up, and the next takes it
 * without waiting out its duration.
 */
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import test from 'ava';
import net from 'node:net';
import { LeaderElector } from '../controller/src/kube/leader.js';
import { type KubeApiStandIn, startKubeApi } from './support/kube-api/server.js';

let api: KubeApiStandIn;
test.before(async () => {
  api = await startKubeApi();
});
test.after.always(async () => {
  await api?.close();
});

/**
 * A TCP relay to the API server that can be cut (connections refused, as from a node that is gone) or
 * stalled (connections accepted and never answered, as behind a partition that drops packets).
 */
async function cuttableRelay(target: URL): Promise<{ url: string; cut(): void; stall(): void }> {
  const sockets = new Set<net.Socket>();
  let stalled = false;
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('error', () => undefined);
    if (stalled) return;
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    cut() {
      server.close();
      for (const s of sockets) s.destroy();
    },
    stall() {
      stalled = true;
      for (const s of sockets) s.destroy();
    },
  };
}

function clientVia(url: string): CoordinationV1Api {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: url, skipTLSVerify: true }],
    users: [{ name: 'u', token: api.token }],
    contexts: [{ name: 'c', cluster: 'c', user: 'u' }],
    currentContext: 'c',
  });
  return kc.makeApiClient(CoordinationV1Api);
}

interface Change {
  who: string;
  leading: boolean;
  at: number;
}

function elector(name: string, who: string, leases: CoordinationV1Api, log: Change[], onChange: () => void): LeaderElector {
  const note = (leading: boolean) => {
    log.push({ who, leading, at: performance.now() });
    onChange();
  };
  return new LeaderElector(leases, {
    namespace: 'ferry-system',
    name,
    identity: who,
    leaseDurationMs: 600,
    renewDeadlineMs: 400,
    retryPeriodMs: 100,
    onStartedLeading: () => note(true),
    onStoppedLeading: () => note(false),
  });
}

/** Resolves when pred holds for the log; re-checked at every change, no polling. */
function when(log: Change[], pred: (log: Change[]) => boolean): { check: () => void; done: Promise<void> } {
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  const check = () => {
    if (pred(log)) resolve();
  };
  return { check, done };
}

/** Whether two electors ever led at the same time, from the log of their changes. */
function overlapped(log: Change[]): boolean {
  const leading = new Set<string>();
  for (const c of log) {
    if (c.leading) leading.add(c.who);
    else leading.delete(c.who);
    if (leading.size > 1) return true;
  }
  return false;
}

test('one replica leads; cut off, it stops before the other takes over', async (t) => {
  const log: Change[] = [];
  const waiters: (() => void)[] = [];
  const changed = () => {
    for (const w of waiters) w();
  };
  const relay = await cuttableRelay(new URL(api.url));
  const a = elector('partition', 'a', clientVia(relay.url), log, changed);
  const first = when(log, (l) => l.some((c) => c.leading));
  waiters.push(first.check);
  a.start();
  await first.done;
  const b = elector('partition', 'b', clientVia(api.url), log, changed);
  b.start();
  t.true(a.isLeader);
  t.false(b.isLeader);

  const handover = when(log, (l) => l.some((c) => c.who === 'b' && c.leading));
  waiters.push(handover.check);
  relay.cut();
  await handover.done;
  t.false(a.isLeader, 'a stopped leading when it could not renew');
  t.false(overlapped(log), JSON.stringify(log));
  const aStopped = log.find((c) => c.who === 'a' && !c.leading)?.at ?? Number.POSITIVE_INFINITY;
  const bStarted = log.find((c) => c.who === 'b' && c.leading)?.at ?? 0;
  t.true(aStopped < bStarted);
  await Promise.all([a.stop(), b.stop()]);
});

test('a leader that stops gives the lease up: the next takes it without waiting out the lease', async (t) => {
  const log: Change[] = [];
  const waiters: (() => void)[] = [];
  const changed = () => {
    for (const w of waiters) w();
  };
  const leases = clientVia(api.url);
  const a = elector('handover', 'a', leases, log, changed);
  const aLeads = when(log, (l) => l.some((c) => c.who === 'a' && c.leading));
  waiters.push(aLeads.check);
  a.start();
  await aLeads.done;
  const b = elector('handover', 'b', leases, log, changed);
  b.start();
  const bLeads = when(log, (l) => l.some((c) => c.who === 'b' && c.leading));
  waiters.push(bLeads.check);
  const stoppedAt = performance.now();
  await a.stop();
  await bLeads.done;
  t.true(performance.now() - stoppedAt < 600, 'b did not wait for the lease to expire');
  t.false(overlapped(log));
  const lease = await leases.readNamespacedLease({ namespace: 'ferry-system', name: 'handover' });
  t.is(lease.spec?.holderIdentity, 'b');
  t.is(lease.spec?.leaseTransitions, 1);
  await b.stop();
});

test('a leader whose calls hang behind a partition still stops at its renew deadline', async (t) => {
  const log: Change[] = [];
  const waiters: (() => void)[] = [];
  const changed = () => {
    for (const w of waiters) w();
  };
  const relay = await cuttableRelay(new URL(api.url));
  const a = elector('stall', 'a', clientVia(relay.url), log, changed);
  const aLeads = when(log, (l) => l.some((c) => c.who === 'a' && c.leading));
  waiters.push(aLeads.check);
  a.start();
  await aLeads.done;
  const b = elector('stall', 'b', clientVia(api.url), log, changed);
  b.start();
  const bLeads = when(log, (l) => l.some((c) => c.who === 'b' && c.leading));
  waiters.push(bLeads.check);
  relay.stall();
  await bLeads.done;
  t.false(a.isLeader, "a's renewal never came back, and it stopped acting all the same");
  t.false(overlapped(log), JSON.stringify(log));
  relay.cut();
  await Promise.all([a.stop(), b.stop()]);
});
