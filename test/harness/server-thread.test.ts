/**
 * VssServerThread (harness/server-thread.ts): a VSS server in a worker thread. What matters
 * beyond the happy path is that a dead worker never leaves a caller waiting forever.
 */
import http from 'node:http';
import { describe, expect, it } from 'vitest';
import type { Worker } from 'node:worker_threads';
import { VssServerThread } from '../../harness/server-thread.js';

/** The worker behind a thread (private): the test plays a worker that dies on its own. */
function workerOf(thread: VssServerThread): Worker {
  return (thread as unknown as { worker: Worker }).worker;
}

describe('VssServerThread', () => {
  it('stops, resumes and closes a server in a worker', async () => {
    const thread = await VssServerThread.start({ kind: 'memory' });
    try {
      const answer = (): Promise<number> => fetch(`${thread.url}/getObject`, { method: 'POST', body: new Uint8Array(0) }).then((r) => r.status);
      expect(await answer()).toBe(404); // an empty request names no key: not found, from the server
      await thread.stop();
      // On a new connection (fetch could reuse its pooled one, which the stop closed): refused.
      const refused = await new Promise<unknown>((resolve) => {
        const request = http.request(`${thread.url}/getObject`, { method: 'POST', agent: false }, () => resolve('answered'));
        request.on('error', resolve);
        request.end();
      });
      expect(refused).toMatchObject({ code: 'ECONNREFUSED' });
      await thread.resume();
      expect(await answer()).toBe(404);
    } finally {
      await thread.close();
    }
  }, 30_000);

  it('a worker that died fails every command at once, and close() still returns', async () => {
    const thread = await VssServerThread.start({ kind: 'memory' });
    await workerOf(thread).terminate(); // as if the worker crashed
    const outcome = (p: Promise<void>): Promise<string> =>
      Promise.race([
        p.then(
          () => 'resolved',
          (error: Error) => `rejected: ${error.message}`,
        ),
        new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 3 s'), 3_000)),
      ]);
    expect(await outcome(thread.stop())).toMatch(/^rejected: VSS server thread: the worker exited/);
    expect(await outcome(thread.resume())).toMatch(/^rejected: VSS server thread: the worker exited/);
    expect(await outcome(thread.close())).toBe('resolved');
  }, 30_000);

  it('close() on a worker that never answers terminates it after the deadline and says so', async () => {
    const thread = await VssServerThread.start({ kind: 'memory' });
    const worker = workerOf(thread);
    // A worker stuck somewhere: the close command never reaches it, so it never answers.
    worker.postMessage = () => {};
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    const closed = Promise.race([
      thread.close({ timeoutMs: 200 }).then(
        () => 'resolved',
        (error: Error) => `rejected: ${error.message}`,
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5_000)),
    ]);
    expect(await closed).toBe('rejected: VSS server thread: the worker did not finish closing within 200 ms; terminated it (its backend may not have closed cleanly)');
    await exited; // terminated, not left running
  }, 30_000);

  it.each(['stop', 'resume'] as const)('%s() on a worker that never answers terminates it after the deadline and says so', async (cmd) => {
    const thread = await VssServerThread.start({ kind: 'memory' });
    const worker = workerOf(thread);
    worker.postMessage = () => {}; // a worker stuck somewhere: it never answers
    const exited = new Promise<number>((resolve) => worker.once('exit', resolve));
    const settled = (p: Promise<void>): Promise<string> =>
      Promise.race([
        p.then(
          () => 'resolved',
          (error: Error) => `rejected: ${error.message}`,
        ),
        new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 5 s'), 5_000)),
      ]);
    expect(await settled(thread[cmd]({ timeoutMs: 200 }))).toBe(`rejected: VSS server thread: the worker did not answer ${cmd} within 200 ms; terminated it`);
    await exited; // terminated, not left running
    // What comes next fails at once with the same reason, and close() still returns.
    expect(await settled(thread.resume())).toBe(`rejected: VSS server thread: the worker did not answer ${cmd} within 200 ms; terminated it`);
    expect(await settled(thread.close())).toBe('resolved');
  }, 30_000);
});
