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

/** Electors on one lease with their changes of leadership logged, and a way to wait for them. */
class Leadership {
  readonly log: Change[] = [];
  private readonly waiters: (() => void)[] = [];

  constructor(private readonly lease: string) {}

  elector(who: string, leases: CoordinationV1Api): LeaderElector {
    const note = (leading: boolean) => {
      this.log.push({ who, leading, at: performance.now() });
      for (const w of this.waiters) w();
    };
    return new LeaderElector(leases, {
      namespace: 'ferry-system',
      name: this.lease,
      identity: who,
      leaseDurationMs: 600,
      renewDeadlineMs: 400,
      retryPeriodMs: 100,
      onStartedLeading: () => note(true),
      onStoppedLeading: () => note(false),
    });
  }

  /** Resolves once `who` has led: checked now and at every change, no polling. */
  led(who: string): Promise<void> {
    const has = () => this.log.some((c) => c.who === who && c.leading);
    if (has()) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push(() => has() && resolve()));
  }

  /** Whether two electors ever led at the same time. */
  overlapped(): boolean {
    const leading = new Set<string>();
    for (const c of this.log) {
      if (c.leading) leading.add(c.who);
      else leading.delete(c.who);
      if (leading.size > 1) return true;
    }
    return false;
  }
}

/** a leads, reaching the API through a relay the test can cut or stall; b waits, straight to the API. */
async function leaderBehindRelay(lease: string) {
  const l = new Leadership(lease);
  const relay = await cuttableRelay(new URL(api.url));
  const a = l.elector('a', clientVia(relay.url));
  a.start();
  await l.led('a');
  const b = l.elector('b', clientVia(api.url));
  b.start();
  return { l, relay, a, b };
}

test('one replica leads; cut off, it stops before the other takes over', async (t) => {
  const { l, relay, a, b } = await leaderBehindRelay('partition');
  t.true(a.isLeader);
  t.false(b.isLeader);

  relay.cut();
  await l.led('b');
  t.false(a.isLeader, 'a stopped leading when it could not renew');
  t.false(l.overlapped(), JSON.stringify(l.log));
  const aStopped = l.log.find((c) => c.who === 'a' && !c.leading)?.at ?? Number.POSITIVE_INFINITY;
  const bStarted = l.log.find((c) => c.who === 'b' && c.leading)?.at ?? 0;
  t.true(aStopped < bStarted);
  await Promise.all([a.stop(), b.stop()]);
});

test('a leader that stops gives the lease up: the next takes it without waiting out the lease', async (t) => {
  const l = new Leadership('handover');
  const leases = clientVia(api.url);
  const a = l.elector('a', leases);
  a.start();
  await l.led('a');
  const b = l.elector('b', leases);
  b.start();
  const stoppedAt = performance.now();
  await a.stop();
  await l.led('b');
  t.true(performance.now() - stoppedAt < 600, 'b did not wait for the lease to expire');
  t.false(l.overlapped());
  const lease = await leases.readNamespacedLease({ namespace: 'ferry-system', name: 'handover' });
  t.is(lease.spec?.holderIdentity, 'b');
  t.is(lease.spec?.leaseTransitions, 1);
  await b.stop();
});

test('a leader whose calls hang behind a partition still stops at its renew deadline', async (t) => {
  const { l, relay, a, b } = await leaderBehindRelay('stall');
  relay.stall();
  await l.led('b');
  t.false(a.isLeader, "a's renewal never came back, and it stopped acting all the same");
  t.false(l.overlapped(), JSON.stringify(l.log));
  relay.cut();
  await Promise.all([a.stop(), b.stop()]);
});
