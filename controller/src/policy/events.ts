/**
 * What policies do, as it happens: one event per run start and end, per checkpoint taken or failed, per
 * deletion, recovery and fence, for GET /policies/:name/events and `ferry policy events`. Live only: the
 * history is in the runs and recoveries the store keeps.
 */
export type PolicyEventType = 'run-started' | 'checkpoint' | 'checkpoint-failed' | 'deleted' | 'run-finished' | 'recovered' | 'fenced';

export interface PolicyEvent {
  seq: number;
  at: string;
  policy: string;
  type: PolicyEventType;
  message: string;
  data?: Record<string, unknown>;
}

type Listener = (e: PolicyEvent) => void;

export class PolicyEvents {
  private seq = 0;
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly everyPolicy = new Set<Listener>();

  emit(policy: string, type: PolicyEventType, message: string, data?: Record<string, unknown>): void {
    const subscribers = this.listeners.get(policy);
    if (!subscribers?.size && !this.everyPolicy.size) return;
    const e: PolicyEvent = { seq: ++this.seq, at: new Date().toISOString(), policy, type, message, ...(data ? { data } : {}) };
    for (const fn of subscribers ?? []) fn(e);
    for (const fn of this.everyPolicy) fn(e);
  }

  /** Every policy's events (metrics); returns the unsubscribe function. */
  subscribeAll(fn: Listener): () => void {
    this.everyPolicy.add(fn);
    return () => this.everyPolicy.delete(fn);
  }

  subscribe(policy: string, fn: Listener): () => void {
    const set = this.listeners.get(policy) ?? new Set();
    set.add(fn);
    this.listeners.set(policy, set);
    return () => {
      set.delete(fn);
      if (!set.size) this.listeners.delete(policy);
    };
  }
}
