/**
 * An informer that keeps going. @kubernetes/client-node lists again by itself after 410 Gone, but any
 * other watch error (the API server restarting, a 500, a refused connection) stops its informer for good,
 * and a leader would then see no more changes. This one is started again after every error, waiting 1 s
 * at first and doubling up to 30 s; a quiet minute since the last error starts again from the first wait.
 */
import {
  type Informer,
  type KubeConfig,
  type KubernetesObject,
  type ListPromise,
  makeInformer,
  type ObjectCache,
} from '@kubernetes/client-node';

const RETRY_MAX_MS = 30_000;

export interface ResilientInformerOptions {
  /** First wait before the watch is started again after an error (default 1 s). */
  retryMs?: number;
  /** Only objects with these labels (a label selector, as kubectl -l takes it). */
  labelSelector?: string;
  onError?: (err: unknown) => void;
}

export class ResilientInformer<T extends KubernetesObject> {
  readonly informer: Informer<T> & ObjectCache<T>;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private lastErrorAt = Number.NEGATIVE_INFINITY;

  constructor(
    kubeConfig: KubeConfig,
    path: string,
    list: ListPromise<T>,
    private readonly opts: ResilientInformerOptions = {},
  ) {
    this.informer = makeInformer<T>(kubeConfig, path, list, opts.labelSelector);
    this.retryMs = opts.retryMs ?? 1_000;
    this.informer.on('error', (err: unknown) => {
      opts.onError?.(err);
      this.restartLater();
    });
  }

  private restartLater(): void {
    if (this.stopped || this.retryTimer) return;
    if (performance.now() - this.lastErrorAt > 2 * RETRY_MAX_MS) this.retryMs = this.opts.retryMs ?? 1_000;
    this.lastErrorAt = performance.now();
    const wait = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.stopped) return;
      this.informer.start().catch(() => this.restartLater());
    }, wait);
  }

  /** Rejects when the first list fails; the informer is started again later all the same. */
  async start(): Promise<void> {
    this.stopped = false;
    try {
      await this.informer.start();
    } catch (err) {
      this.restartLater();
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.informer.stop();
  }
}
