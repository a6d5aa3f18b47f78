/**
 * Environment settings of the harness tools and benchmarks. A bad value is refused before any
 * work starts, with one line naming the variable and exit code 2: not NaN rows after a minute
 * of measuring, and not a stack trace.
 */

/** Prints why `name` is refused and exits; `got` replaces the quoted value (one that may hold a secret). */
function refuse(name: string, expected: string, raw: string, got = JSON.stringify(raw)): never {
  process.stderr.write(`${name} must be ${expected}, got ${got}\n`);
  process.exit(2);
}

function parseInteger(name: string, raw: string, min: number): number {
  const text = raw.trim();
  // Decimal digits only: Number() would also take "0x10", "1e3", "0b11" or "1.0", which nobody
  // means as a count and which would run with a value the user did not write.
  const value = /^-?\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min) refuse(name, min === 0 ? 'a whole number ≥ 0' : `a whole number ≥ ${min}`, raw);
  return value;
}

/** An integer setting of at least `min` (default 1). */
export function integerSetting(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  return raw === undefined ? fallback : parseInteger(name, raw, min);
}

/** A comma-separated list of integers of at least `min`. */
export function integerListSetting(name: string, fallback: readonly number[], min = 1): number[] {
  const raw = process.env[name];
  if (raw === undefined) return [...fallback];
  return raw.split(',').map((part) => parseInteger(name, part, min));
}

/** One of `choices`. */
export function choiceSetting<T extends string>(name: string, choices: readonly T[], fallback: T): T {
  const raw = process.env[name];
  if (raw === undefined) return fallback;
  if (!(choices as readonly string[]).includes(raw)) refuse(name, `one of ${choices.join(', ')}`, raw);
  return raw as T;
}

/** A comma-separated list, each one of `choices`. */
export function choiceListSetting<T extends string>(name: string, choices: readonly T[], fallback: readonly T[]): T[] {
  const raw = process.env[name];
  if (raw === undefined) return [...fallback];
  const parts = raw.split(',');
  if (parts.some((part) => !(choices as readonly string[]).includes(part))) refuse(name, `a comma-separated list of ${choices.join(', ')}`, raw);
  return parts as T[];
}

/**
 * A PostgreSQL connection URL (`postgres:` or `postgresql:`), or undefined when unset or empty.
 * A refused value is never echoed, as it may carry a password: a URL of another kind is named by
 * its scheme, anything else (a mistyped `postgres//user:secret@db`) only as not a URL.
 */
export function postgresUrlSetting(name: string): string | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const expected = 'a PostgreSQL URL such as postgres://postgres@127.0.0.1:5432/postgres';
  if (!URL.canParse(raw)) refuse(name, expected, raw, 'a value that is not a URL (not shown: it may hold a password)');
  const { protocol } = new URL(raw);
  if (protocol !== 'postgres:' && protocol !== 'postgresql:') refuse(name, expected, raw, `a URL of scheme ${protocol}`);
  return raw;
}
