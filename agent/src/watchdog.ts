/**
 * A timer that fires only when progress stops: each kick pushes the deadline back. Transfers between
 * nodes use it on both ends, because a cut link shows no error at all, only silence, and TCP alone would
 * wait for minutes before it gave up.
 */
export interface Watchdog {
  /** Progress seen: the deadline moves to now + the idle limit (or + `ms` when given). */
  kick(ms?: number): void;
  stop(): void;
}

export function watchdog(idleMs: number, onSilence: () => void): Watchdog {
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number) => {
    if (timer) clearTimeout(timer);
    timer = setTimeout(onSilence, ms);
    timer.unref();
  };
  arm(idleMs);
  return {
    kick: (ms = idleMs) => arm(ms),
    stop: () => {
      if (timer) clearTimeout(timer);
      timer = undefined;
    },
  };
}
