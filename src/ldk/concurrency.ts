/**
 * Bounded parallelism for store requests: restore and migration issue many independent
 * reads, and running them all at once would swamp a remote server, while running them one
 * by one would make restore time grow with round trips.
 */

/** Runs tasks with at most `max` in flight. Wrap only leaf operations (never nest). */
export type Limiter = <T>(task: () => Promise<T>) => Promise<T>;

export function createLimiter(max: number): Limiter {
  if (!Number.isInteger(max) || max < 1) throw new RangeError(`concurrency must be a positive integer, got ${max}`);
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    // A freed slot passes straight to the first waiter (`active` stays put): decrementing and
    // letting the waiter increment when it resumes would let a task that arrives in between
    // take the slot too, and the bound would be exceeded.
    if (active >= max) await new Promise<void>((resolve) => waiting.push(resolve));
    else active++;
    try {
      return await task();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
}

/** `Promise.all(items.map(fn))` with at most `limit` calls of `fn` in flight; results keep input order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const run = createLimiter(limit);
  return Promise.all(items.map((item, i) => run(() => fn(item, i))));
}
