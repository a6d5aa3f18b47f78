/**
 * ManagerOrderedBroadcaster's hold limit: Node runs a timer whose delay is NaN, Infinity or
 * above 2^31 - 1 ms after 1 ms, so such a `maxHoldMs` (an app asking for "hold until the manager
 * is durable, however long") would let every transaction out before its manager, silently.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { ManagerOrderedBroadcaster, initLdk } from '../../src/ldk/index.js';

beforeAll(async () => {
  await initLdk();
});

describe('ManagerOrderedBroadcaster options', () => {
  it('refuses a maxHoldMs that a Node timer cannot honour, with a RangeError naming the bound', () => {
    for (const maxHoldMs of [Infinity, 2 ** 31, Number.NaN, -1]) {
      expect(() => new ManagerOrderedBroadcaster(() => {}, { maxHoldMs })).toThrow(/maxHoldMs must be a number of milliseconds from 0 to 2147483647/);
      expect(() => new ManagerOrderedBroadcaster(() => {}, { maxHoldMs })).toThrow(RangeError);
    }
    expect(() => new ManagerOrderedBroadcaster(() => {}, { maxHoldMs: 2 ** 31 - 1 })).not.toThrow();
    expect(() => new ManagerOrderedBroadcaster(() => {}, { maxHoldMs: 0 })).not.toThrow();
  });

  it('refuses a broadcaster that is not a function at construction, instead of failing every broadcast later inside LDK', () => {
    const ldkStyle = { broadcast_transactions: () => {} };
    for (const send of [ldkStyle, undefined, null, 'bitcoind']) {
      expect(() => new ManagerOrderedBroadcaster(send as unknown as (txs: Uint8Array[]) => void)).toThrow(TypeError);
    }
    expect(() => new ManagerOrderedBroadcaster(ldkStyle as unknown as (txs: Uint8Array[]) => void)).toThrow(/needs a function that sends transactions, got object/);
  });
});
