/**
 * The logging contract of the LDK layer: pino-compatible `(fields, message)` calls, so a
 * pino logger can be passed directly; anything with these four methods works.
 */
export interface PersistenceLogger {
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

/** Discards everything (tests, benchmarks). */
export const silentLogger: PersistenceLogger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/** Warnings and errors to stderr; the default when no logger is given. */
export const stderrLogger: PersistenceLogger = {
  debug() {},
  info() {},
  warn(fields, message) {
    console.warn(`[ldk-vss] ${message}`, fields);
  },
  error(fields, message) {
    console.error(`[ldk-vss] ${message}`, fields);
  },
};

/** A short, loggable description of an error and its causes. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 4; depth++) {
    parts.push(current instanceof Error ? `${current.name}: ${current.message}` : String(current));
    current = current instanceof Error ? current.cause : undefined;
  }
  return parts.join(' <- ');
}
