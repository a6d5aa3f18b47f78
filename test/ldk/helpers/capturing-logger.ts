import type { PersistenceLogger } from '../../../src/ldk/index.js';

export interface LoggedLine {
  level: string;
  fields: Record<string, unknown>;
  message: string;
}

/** A PersistenceLogger that keeps every line, for assertions on what was logged. */
export function capturingLogger(): PersistenceLogger & { lines: LoggedLine[] } {
  const lines: LoggedLine[] = [];
  const at = (level: string) => (fields: Record<string, unknown>, message: string) => lines.push({ level, fields, message });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

/** A PersistenceLogger whose warn and error throw (a log transport that is down). */
export const throwingLogger: PersistenceLogger = {
  debug() {},
  info() {},
  warn() {
    throw new Error('log transport down');
  },
  error() {
    throw new Error('log transport down');
  },
};
