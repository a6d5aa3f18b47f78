/**
 * WalletFleet (harness/wallets.ts) failure paths that need no server: a wallet that cannot be
 * built must not leave its store client open.
 */
import { describe, expect, it, vi } from 'vitest';
import type { AsyncKVStore } from '../../src/store/types.js';
import { WalletFleet, type WalletStoreHandle } from '../../harness/wallets.js';

/** A store nobody should reach: the wallet fails before its node runs. */
const unusedStore: AsyncKVStore = {
  read: () => Promise.reject(new Error('unused')),
  write: () => Promise.reject(new Error('unused')),
  remove: () => Promise.reject(new Error('unused')),
  list: () => Promise.reject(new Error('unused')),
  listAll: () => Promise.reject(new Error('unused')),
};

describe('WalletFleet.addWallet', () => {
  it('closes the store client it opened when the wallet cannot be created', async () => {
    const close = vi.fn(async () => {});
    // No blocking view: the ldk-sync mode cannot be built on this store.
    const fleet = await WalletFleet.create(async (): Promise<WalletStoreHandle> => ({ store: unusedStore, close }));
    try {
      await expect(fleet.addWallet('A', { mode: 'ldk-sync' })).rejects.toThrow(/blocking view/);
      expect(close).toHaveBeenCalledTimes(1);
      expect(() => fleet.wallet('A')).toThrow(/no wallet A/);
      // The name is free again: a wallet that could not be created does not block it.
      await fleet.addWallet('A');
      expect(fleet.wallet('A').incarnation).toBe(1);
    } finally {
      await fleet.shutdown();
    }
  });
});

describe('WalletFleet.shutdown', () => {
  it('closes every store client even when stopping the network fails, and still reports that failure', async () => {
    const close = vi.fn(async () => {});
    const fleet = await WalletFleet.create(async (): Promise<WalletStoreHandle> => ({ store: unusedStore, close }));
    await fleet.addWallet('A');
    const stop = fleet.net.shutdown.bind(fleet.net);
    vi.spyOn(fleet.net, 'shutdown').mockImplementationOnce(async () => {
      await stop();
      throw new Error('a node failed to stop');
    });
    await expect(fleet.shutdown()).rejects.toThrow('a node failed to stop');
    expect(close).toHaveBeenCalledTimes(1);
  });
});

describe('WalletFleet.crashAt', () => {
  /** What became of a crash promise within 3 s: settled, or still pending (the defect). */
  function outcome(p: Promise<unknown>): Promise<string> {
    return Promise.race([
      p.then(
        () => 'resolved',
        (err: Error) => `${err.name}: ${err.message}`,
      ),
      new Promise<string>((resolve) => setTimeout(() => resolve('still pending after 3 s'), 3_000)),
    ]);
  }

  it('settles the earlier promise when re-armed, and the armed one when the wallet crashes another way', async () => {
    // Writes to this store never become durable, so an after-durable point is never hit.
    const fleet = await WalletFleet.create(async (): Promise<WalletStoreHandle> => ({ store: unusedStore }));
    try {
      await fleet.addWallet('A');
      const first = fleet.crashAt('A', { kind: 'manager', ordinal: 1, timing: 'after-durable' });
      const second = fleet.crashAt('A', { kind: 'manager', ordinal: 2, timing: 'after-durable' });
      expect(await outcome(first)).toBe('CrashPointCancelledError: wallet A: crash point (after-durable at write #1 of kind manager) was superseded by another crashAt before it was reached');
      await fleet.crash('A');
      expect(await outcome(second)).toBe('CrashPointCancelledError: wallet A: the store crashed another way before crash point (after-durable at write #2 of kind manager) was reached');
      // Arming a wallet that has already crashed says so at once.
      expect(await outcome(fleet.crashAt('A', { kind: 'manager', ordinal: 1, timing: 'after-durable' }))).toMatch(/^CrashPointCancelledError: wallet A: the store has already crashed/);
    } finally {
      await fleet.shutdown();
    }
  });

  it('shutdown() cancels a crash point never reached, refuses new ones, and leaves no unhandled rejection', async () => {
    const fleet = await WalletFleet.create(async (): Promise<WalletStoreHandle> => ({ store: unusedStore }));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await fleet.addWallet('A');
      await fleet.addWallet('B');
      const awaited = fleet.crashAt('A', { kind: 'manager', ordinal: 1, timing: 'after-durable' });
      // A caller that failed before awaiting its crash point (e.g. sendPayment threw).
      void fleet.crashAt('B', { kind: 'manager', ordinal: 1, timing: 'after-durable' });
      await fleet.shutdown();
      expect(await outcome(awaited)).toBe('CrashPointCancelledError: wallet A: the fleet shut down: crash point (after-durable at write #1 of kind manager) was disarmed before it was reached');
      expect(await outcome(fleet.crashAt('A', { kind: 'manager', ordinal: 1, timing: 'after-durable' }))).toBe(
        'CrashPointCancelledError: wallet A: the fleet has shut down: a crash point can no longer be reached',
      );
      // Unhandled rejections are reported after the microtask queue drains.
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
