/**
 * Ctrl-C (SIGINT) or SIGTERM for a harness tool or benchmark that owns something outside its
 * process, such as a PostgreSQL database created for the run: Node's default action ends the
 * process at once, skipping every `finally`, so the database stayed behind for good. With this,
 * the signal prints one line, runs the clean-up and exits 130 (SIGINT) or 143 (SIGTERM), as a
 * shell reports a process ended by that signal. A second signal ends the process at once.
 */
export interface Interruption {
  /** Whether a signal arrived: the run's own failure (its work torn down under it) is then expected, not news. */
  readonly interrupted: boolean;
}

/**
 * Installs the handlers. `line` is what stderr gets (e.g. "stress:payments interrupted (SIGINT):
 * stopping its VSS server"); `cleanUp` must tolerate running while the run is still under way
 * and at the same time as the run's own clean-up (make it idempotent).
 */
export function cleanUpOnInterrupt(line: (signal: 'SIGINT' | 'SIGTERM') => string, cleanUp: () => Promise<void>): Interruption {
  const state = { interrupted: false };
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    // once: after the first signal Node's default action is back, so a second one stops at once.
    process.once(signal, () => {
      state.interrupted = true;
      process.stderr.write(`${line(signal)}\n`);
      cleanUp().then(
        () => process.exit(code),
        (err: unknown) => {
          process.stderr.write(`clean-up after ${signal} failed: ${err instanceof Error ? err.message : String(err)}\n`);
          process.exit(code);
        },
      );
    });
  }
  return state;
}
