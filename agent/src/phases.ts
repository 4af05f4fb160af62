/**
 * Times the consecutive phases of one operation (a dump, a restore), reported with it by name in ms:
 * where a migration's downtime goes is otherwise guesswork.
 */
export interface PhaseTimer {
  readonly phases: Record<string, number>;
  /** Ends the phase running since the last end (or the start) under `name`. */
  end(name: string): void;
}

export function phaseTimer(): PhaseTimer {
  const phases: Record<string, number> = {};
  let since = performance.now();
  return {
    phases,
    end(name) {
      const now = performance.now();
      phases[name] = Math.round(now - since);
      since = now;
    },
  };
}
