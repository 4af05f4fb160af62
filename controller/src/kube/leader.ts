/**
 * Leader election on a coordination.k8s.io/v1 Lease, as client-go does it, so that of two controller
 * replicas exactly one acts. The holder renews the lease every retry period; a replica that sees the same
 * lease record unchanged for a whole lease duration, by its own clock (never trusting another node's
 * clock), takes it over. Every write names the resourceVersion it read, so of two replicas racing for a
 * lease one gets 409 Conflict and stays a follower. A leader that cannot renew within the renew deadline
 * (shorter than the lease duration) stops acting before anyone else may start.
 */
import type { CoordinationV1Api, V1Lease } from '@kubernetes/client-node';

export interface LeaderElectionOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationMs?: number;
  /** A leader that has not renewed for this long stops leading; must be below leaseDurationMs. */
  renewDeadlineMs?: number;
  retryPeriodMs?: number;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  /** Told of failed calls to the API server, which the elector retries by itself. */
  onError?: (err: unknown) => void;
}

const codeOf = (err: unknown) => (err as { code?: number }).code;

export class LeaderElector {
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = true;
  /** The lease record as last read, and when (monotonic, this process) it was first seen so. */
  private observed: { key: string; at: number } | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private readonly leaseMs: number;
  private readonly deadlineMs: number;
  private readonly retryMs: number;

  constructor(
    private readonly leases: CoordinationV1Api,
    private readonly opts: LeaderElectionOptions,
  ) {
    this.leaseMs = opts.leaseDurationMs ?? 15_000;
    this.deadlineMs = opts.renewDeadlineMs ?? 10_000;
    this.retryMs = opts.retryPeriodMs ?? 2_000;
    if (this.deadlineMs >= this.leaseMs) throw new Error('renewDeadlineMs must be shorter than leaseDurationMs');
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  /** Stops; a leader gives the lease up at once, so that another replica need not wait it out. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.deadline);
    if (!this.leading) return;
    this.setLeading(false);
    try {
      const lease = await this.read();
      if (lease?.spec?.holderIdentity === this.opts.identity) {
        await this.write({ ...lease, spec: { ...lease.spec, holderIdentity: undefined, renewTime: undefined, acquireTime: undefined } });
      }
    } catch (err) {
      this.opts.onError?.(err);
    }
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.tryAcquireOrRenew();
    } catch (err) {
      this.opts.onError?.(err);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.tick(), this.retryMs);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    const now = new Date();
    const lease = await this.read();
    const spec = {
      holderIdentity: this.opts.identity,
      leaseDurationSeconds: Math.ceil(this.leaseMs / 1000),
      renewTime: now,
    };
    if (!lease) {
      await this.create({
        metadata: { name: this.opts.name, namespace: this.opts.namespace },
        spec: { ...spec, acquireTime: now, leaseTransitions: 0 },
      });
      return this.renewed();
    }
    const holder = lease.spec?.holderIdentity;
    const key = `${holder ?? ''}|${lease.spec?.renewTime ? new Date(lease.spec.renewTime).toISOString() : ''}|${lease.metadata?.resourceVersion ?? ''}`;
    if (this.observed?.key !== key) this.observed = { key, at: performance.now() };
    if (holder === this.opts.identity) {
      await this.write({ ...lease, spec: { ...lease.spec, ...spec } });
      return this.renewed();
    }
    const expired = !holder || performance.now() - this.observed.at > this.leaseMs;
    if (!expired) {
      if (this.leading) this.setLeading(false);
      return;
    }
    await this.write({
      ...lease,
      spec: { ...spec, acquireTime: now, leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1 },
    });
    this.renewed();
  }

  /**
   * Each renewal arms the deadline anew. A timer, not a check after the next call: a call to an API server
   * behind a partition may hang far longer than the lease lasts, and the leader must stop acting anyway.
   */
  private renewed(): void {
    clearTimeout(this.deadline);
    this.deadline = setTimeout(() => this.setLeading(false), this.deadlineMs);
    this.setLeading(true);
  }

  private setLeading(leading: boolean): void {
    if (leading === this.leading) return;
    this.leading = leading;
    if (!leading) clearTimeout(this.deadline);
    if (leading) this.opts.onStartedLeading();
    else this.opts.onStoppedLeading();
  }

  private async read(): Promise<V1Lease | undefined> {
    return this.leases.readNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace }).catch((err: unknown) => {
      if (codeOf(err) === 404) return undefined;
      throw err;
    });
  }

  private async create(body: V1Lease): Promise<void> {
    await this.leases.createNamespacedLease({ namespace: this.opts.namespace, body });
  }

  /** Replaces the lease as read: its resourceVersion makes a concurrent writer's attempt a 409. */
  private async write(body: V1Lease): Promise<void> {
    await this.leases.replaceNamespacedLease({ name: this.opts.name, namespace: this.opts.namespace, body });
  }
}
