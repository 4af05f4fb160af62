/**
 * Work a call starts and leaves running after it returns (a page server serving a lazy checkpoint's
 * memory, a lazy-pages daemon loading a restored container's memory), as a route reports it: its state
 * now, or once it ends within a wait the caller chose (a long poll, so nobody polls in a tight loop).
 */
export interface BackgroundState<Running extends string, Done extends string> {
  state: Running | Done | 'failed';
  error?: string;
}

export class BackgroundWork<Running extends string, Done extends string> {
  private current: BackgroundState<Running, Done>;
  readonly settled: Promise<void>;

  constructor(
    work: Promise<unknown>,
    private readonly runningState: Running,
    done: Done,
  ) {
    this.current = { state: runningState };
    this.settled = work.then(
      () => {
        this.current = { state: done };
      },
      (err: unknown) => {
        this.current = { state: 'failed', error: (err as Error).message };
      },
    );
  }

  get running(): boolean {
    return this.current.state === this.runningState;
  }

  /** The state now, or once the work ends if that comes within waitMs. */
  async stateAfter(waitMs: number): Promise<BackgroundState<Running, Done>> {
    if (waitMs > 0 && this.running) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.settled, new Promise((r) => (timer = setTimeout(r, waitMs)))]).finally(() => clearTimeout(timer));
    }
    return { ...this.current };
  }
}
