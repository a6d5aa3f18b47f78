/**
 * A bound on waiting for work the server cannot cancel (a backend's health check or close): the
 * work's outcome, or a rejection with `onTimeout()` once `ms` have passed. The work itself goes
 * on; the timer never outlives the wait.
 */
export async function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([work, expired]);
  } finally {
    clearTimeout(timer);
  }
}
