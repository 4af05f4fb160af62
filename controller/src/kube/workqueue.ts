/**
 * The work queue between the controller's informers and its reconcilers, with the guarantees client-go's
 * gives controllers: a key is never reconciled twice at once (an add while it runs marks it dirty and it
 * runs again after); adds of a waiting key collapse into one; a failed reconcile is retried with
 * exponential backoff per key (reset by a success), and a later add does not wait out the backoff.
 */

export interface WorkQueueOptions {
  /** How many keys are reconciled at the same time (each key still one at a time). */
  concurrency?: number;
  /** First retry delay; doubled per consecutive failure of the same key, up to maxDelayMs. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Told of every failure, with the delay before the retry. */
  onError?: (key: string, err: unknown, retryInMs: number) => void;
}

export class WorkQueue {
  private readonly waiting: string[] = [];
  private readonly queued = new Set<string>();
  private readonly running = new Set<string>();
  /** Keys added while they ran: they go again once done. */
  private readonly dirty = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private active = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  private readonly concurrency: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;

  constructor(
    private readonly reconcile: (key: string) => Promise<void>,
    private readonly opts: WorkQueueOptions = {},
  ) {
    this.concurrency = opts.concurrency ?? 2;
    this.baseDelayMs = opts.baseDelayMs ?? 200;
    this.maxDelayMs = opts.maxDelayMs ?? 60_000;
  }

  add(key: string): void {
    if (this.stopped) return;
    // A fresh add is news: it goes now, not when the backoff of an earlier failure ends.
    const timer = this.retryTimers.get(key);
    if (timer) {
      clearTimeout(timer);
      this.retryTimers.delete(key);
    }
    if (this.running.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.waiting.push(key);
    this.pump();
  }

  /** Consecutive failures of a key so far (0 after a success). */
  failuresOf(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** Resolves when nothing is queued, running, or waiting to be retried. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking keys and drops pending retries; resolves once running reconciles end. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.retryTimers.values()) clearTimeout(t);
    this.retryTimers.clear();
    this.waiting.length = 0;
    this.queued.clear();
    this.dirty.clear();
    await this.idle();
  }

  private isIdle(): boolean {
    return this.active === 0 && this.waiting.length === 0 && this.retryTimers.size === 0;
  }

  private pump(): void {
    while (!this.stopped && this.active < this.concurrency && this.waiting.length) {
      const key = this.waiting.shift() as string;
      this.queued.delete(key);
      this.running.add(key);
      this.active += 1;
      void this.run(key);
    }
    if (this.isIdle()) {
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async run(key: string): Promise<void> {
    try {
      await this.reconcile(key);
      this.failures.delete(key);
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (n - 1));
      this.opts.onError?.(key, err, delay);
      if (!this.stopped && !this.dirty.has(key)) {
        this.retryTimers.set(
          key,
          setTimeout(() => {
            this.retryTimers.delete(key);
            this.add(key);
          }, delay),
        );
      }
    } finally {
      this.running.delete(key);
      this.active -= 1;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
    }
  }
}
