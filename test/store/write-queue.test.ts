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

  describe('batches over several keys', () => {
    it('waits until every earlier operation on any of its keys has settled; later ones wait for it', async () => {
      const log: string[] = [];
      const queue = new KeyedWriteQueue();
      const a = manual(log, 'a');
      const b = manual(log, 'b');
      const batch = manual(log, 'batch');
      const after = manual(log, 'after');
      const pa = queue.enqueue('k1', a.run);
      const pb = queue.enqueue('k2', b.run);
      await tick();
      const pBatch = queue.enqueueBatch(['k1', 'k2'], batch.run);
      const pAfter = queue.enqueue('k2', after.run);
      expect(queue.hasBatch('k1')).toBe(true);
      a.finish();
      await pa;
      await tick();
      expect(log).toEqual(['start a', 'start b']); // k2 is still busy
      b.finish();
      await pb;
      await tick();
      expect(log).toEqual(['start a', 'start b', 'start batch']);
      expect(queue.isRunning('k1') && queue.isRunning('k2')).toBe(true);
      batch.finish();
      await pBatch;
      await tick();
      expect(log.at(-1)).toBe('start after');
      after.finish();
      await pAfter;
      expect(queue.hasBatch('k1')).toBe(false);
      await queue.whenIdle();
    });

    it('supersedes a single-key operation still waiting on one of its keys; that caller settles with the batch', async () => {
      const log: string[] = [];
      const queue = new KeyedWriteQueue();
      const first = manual(log, 'first');
      const p1 = queue.enqueue('k1', first.run);
      await tick();
      const superseded = queue.enqueue('k1', manual(log, 'superseded').run);
      const batch = manual(log, 'batch');
      const pBatch = queue.enqueueBatch(['k1', 'k2'], batch.run);
      first.finish();
      await p1;
      await tick();
      expect(log).toEqual(['start first', 'start batch']);
      batch.finish(new Error('server down'));
      await expect(pBatch).rejects.toThrow('server down');
      await expect(superseded).rejects.toThrow('server down');
    });

    it('is never superseded: a later single write of one of its keys runs after it', async () => {
      const log: string[] = [];
      const queue = new KeyedWriteQueue();
      const first = manual(log, 'first');
      const p1 = queue.enqueue('k1', first.run);
      await tick();
      const batch = manual(log, 'batch');
      const pBatch = queue.enqueueBatch(['k1', 'k2'], batch.run);
      const later = manual(log, 'later');
      const pLater = queue.enqueue('k1', later.run);
      // A synchronous caller may not take the later write either: it would overtake the batch.
      expect(queue.hasBatch('k1')).toBe(true);
      first.finish();
      await p1;
      await tick();
      expect(log).toEqual(['start first', 'start batch']);
      batch.finish();
      await pBatch;
      await tick();
      expect(log).toEqual(['start first', 'start batch', 'start later']);
      later.finish();
      await pLater;
    });

    it('two batches over the same keys in opposite order run one after the other, never deadlock', async () => {
      const log: string[] = [];
      const queue = new KeyedWriteQueue();
      const x = manual(log, 'x');
      const y = manual(log, 'y');
      const px = queue.enqueueBatch(['k1', 'k2'], x.run);
      const py = queue.enqueueBatch(['k2', 'k1'], y.run);
      await tick();
      expect(log).toEqual(['start x']);
      x.finish();
      await px;
      await tick();
      expect(log).toEqual(['start x', 'start y']);
      y.finish();
      await py;
      await queue.whenIdle();
    });

    it('runs alongside operations on other keys', async () => {
      const log: string[] = [];
      const queue = new KeyedWriteQueue();
      const batch = manual(log, 'batch');
      const other = manual(log, 'other');
      const pBatch = queue.enqueueBatch(['k1', 'k2'], batch.run);
      const pOther = queue.enqueue('k3', other.run);
      await tick();
      expect(log.sort()).toEqual(['start batch', 'start other']);
      batch.finish();
      other.finish();
      await Promise.all([pBatch, pOther]);
    });
  });
});
