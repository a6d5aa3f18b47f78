import { describe, expect, it } from 'vitest';
import { KeyedWriteQueue } from '../../src/store/write-queue.js';

/** An operation the test completes by hand, recording when it started. */
function manual(log: string[], name: string) {
  let finish!: (error?: Error) => void;
  const run = () =>
    new Promise<void>((resolve, reject) => {
      log.push(`start ${name}`);
      finish = (error) => (error ? reject(error) : resolve());
    });
  return { run, finish: (error?: Error) => finish(error) };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe('KeyedWriteQueue', () => {
  it('runs operations of one key one at a time, in call order', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const a = manual(log, 'a');
    const b = manual(log, 'b');
    const pa = queue.enqueue('k', a.run);
    await tick();
    const pb = queue.enqueue('k', b.run);
    await tick();
    expect(log).toEqual(['start a']);
    a.finish();
    await pa;
    await tick();
    expect(log).toEqual(['start a', 'start b']);
    b.finish();
    await pb;
    await queue.whenIdle();
  });

  it('sends only the newest of several waiting operations; all callers settle with it', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const first = manual(log, 'first');
    const p1 = queue.enqueue('k', first.run);
    await tick();
    const settled: string[] = [];
    const waiting = ['w1', 'w2', 'w3'].map((name) => {
      const op = manual(log, name);
      return { op, promise: queue.enqueue('k', op.run).then(() => settled.push(name)) };
    });
    first.finish();
    await p1;
    await tick();
    expect(log).toEqual(['start first', 'start w3']);
    expect(settled).toEqual([]);
    waiting[2].op.finish();
    await Promise.all(waiting.map((w) => w.promise));
    expect(settled.sort()).toEqual(['w1', 'w2', 'w3']);
  });

  it('a superseded caller sees the failure of the newer operation that replaced it', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const first = manual(log, 'first');
    const p1 = queue.enqueue('k', first.run);
    await tick();
    const older = queue.enqueue('k', manual(log, 'older').run);
    const newer = manual(log, 'newer');
    const pNewer = queue.enqueue('k', newer.run);
    first.finish();
    await p1;
    await tick();
    newer.finish(new Error('server down'));
    await expect(pNewer).rejects.toThrow('server down');
    await expect(older).rejects.toThrow('server down');
  });

  it('a failed operation does not stop the next one', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const a = manual(log, 'a');
    const b = manual(log, 'b');
    const pa = queue.enqueue('k', a.run);
    const pb = (async () => {
      await tick();
      return queue.enqueue('k', b.run);
    })();
    await tick();
    a.finish(new Error('boom'));
    await expect(pa).rejects.toThrow('boom');
    await tick();
    b.finish();
    await pb;
    expect(log).toEqual(['start a', 'start b']);
  });

  it('runs different keys concurrently', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const a = manual(log, 'a');
    const b = manual(log, 'b');
    const pa = queue.enqueue('k1', a.run);
    const pb = queue.enqueue('k2', b.run);
    await tick();
    expect(log.sort()).toEqual(['start a', 'start b']);
    a.finish();
    b.finish();
    await Promise.all([pa, pb]);
  });

  it('an operation enqueued in the same synchronous stretch supersedes the first before it starts', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const a = manual(log, 'a');
    const b = manual(log, 'b');
    const pa = queue.enqueue('k', a.run);
    const pb = queue.enqueue('k', b.run);
    expect(queue.isRunning('k')).toBe(false);
    await tick();
    expect(log).toEqual(['start b']);
    b.finish();
    await Promise.all([pa, pb]);
  });

  it('hands waiting operations to a synchronous caller, and reports running ones', async () => {
    const log: string[] = [];
    const queue = new KeyedWriteQueue();
    const a = manual(log, 'a');
    const pa = queue.enqueue('k', a.run);
    const waiters = queue.takeWaiting('k');
    expect(waiters).toHaveLength(1);
    expect(queue.isIdle('k')).toBe(true);
    waiters[0].resolve();
    await pa;
    await tick();
    expect(log).toEqual([]);

    const b = manual(log, 'b');
    const pb = queue.enqueue('k', b.run);
    await tick();
    expect(queue.isRunning('k')).toBe(true);
    expect(queue.takeWaiting('k')).toEqual([]);
    let idle = false;
    const whenIdle = queue.whenIdle().then(() => (idle = true));
    await tick();
    expect(idle).toBe(false);
    b.finish();
    await pb;
    await whenIdle;
    expect(idle).toBe(true);
  });
});
