/**
 * ManagerOrderedBroadcaster when the wallet's side fails: an asynchronous broadcaster whose
 * promise rejects (a node or Esplora refusing a transaction LDK rebroadcasts), a manager writer
 * that throws instead of rejecting, a logger that throws. None of it may escape into LDK (a
 * JavaScript exception inside an LDK callback is fatal to LDK) or crash the process as an
 * unhandled rejection.
 */
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ManagerOrderedBroadcaster, initLdk, type ManagerDurability } from '../../src/ldk/index.js';
import { capturingLogger, throwingLogger } from './helpers/capturing-logger.js';

beforeAll(async () => {
  await initLdk();
});

const tx = (n: number) => Uint8Array.of(2, 0, 0, 0, n);
const settle = () => new Promise((r) => setTimeout(r, 5));

let unhandled: unknown[] = [];
const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
beforeEach(() => {
  unhandled = [];
  process.on('unhandledRejection', onUnhandled);
});
afterEach(() => {
  process.off('unhandledRejection', onUnhandled);
});


describe('ManagerOrderedBroadcaster failures', () => {
  it('an asynchronous broadcaster that rejects is logged with its cause, not left as an unhandled rejection', async () => {
    const log = capturingLogger();
    const b = new ManagerOrderedBroadcaster(async () => {
      throw new Error('bad-txns-inputs-missingorspent');
    }, { log });
    b.broadcaster.broadcast_transactions([tx(1), tx(2)]);
    await settle();
    expect(unhandled).toEqual([]);
    expect(log.lines).toEqual([expect.objectContaining({ level: 'error', message: 'broadcaster threw' })]);
    expect(String(log.lines[0].fields.cause)).toContain('bad-txns-inputs-missingorspent');
    expect(log.lines[0].fields.transactions).toBe(2);
  });

  it('a manager writer that throws instead of rejecting drops the transaction (as a stopped writer does) without throwing into LDK', async () => {
    const log = capturingLogger();
    const sent: Uint8Array[][] = [];
    const b = new ManagerOrderedBroadcaster((txs) => void sent.push(txs), { log, maxHoldMs: 20 });
    const writer: ManagerDurability = {
      managerDurable() {
        throw new Error('writer gone');
      },
    };
    b.attach(writer);
    expect(() => b.broadcaster.broadcast_transactions([tx(3)])).not.toThrow();
    await new Promise((r) => setTimeout(r, 40));
    expect(sent).toEqual([]);
    expect(b.held).toBe(0);
    expect(b.stats.dropped).toBe(1);
    expect(log.lines.some((l) => l.level === 'warn' && /broadcast dropped/.test(l.message) && String(l.fields.cause).includes('writer gone'))).toBe(true);
  });

  it('a logger that throws is ignored: the broadcast still goes out, nothing reaches LDK or the process', async () => {
    const sent: Uint8Array[][] = [];
    let calls = 0;
    const b = new ManagerOrderedBroadcaster((txs) => {
      calls++;
      if (calls === 1) throw new Error('first attempt fails');
      sent.push(txs);
    }, { log: throwingLogger, maxHoldMs: 0 });
    expect(() => b.broadcaster.broadcast_transactions([tx(4)])).not.toThrow();
    // Held, then released by the hold limit (a warning the logger refuses) from a timer.
    b.attach({ managerDurable: () => new Promise(() => {}) });
    b.broadcaster.broadcast_transactions([tx(5)]);
    await settle();
    expect(sent).toEqual([[tx(5)]]);
    expect(b.stats).toMatchObject({ sentAtOnce: 1, sentAfterTimeout: 1 });
    expect(unhandled).toEqual([]);
  });
});
