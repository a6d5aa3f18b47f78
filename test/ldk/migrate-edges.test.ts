/**
 * migrateStore's edges beyond units.test.ts: what a migration cut off part way leaves in the
 * target, an async progress callback that rejects, and a target manager the source lacks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { MigrationVerificationError, initLdk, migrateStore } from '../../src/ldk/index.js';
import { StoreIOError } from '../../src/store/errors.js';
import { cutOffAfter } from './helpers/cut-off-store.js';
import { MemoryKVStore } from './helpers/memory-store.js';

beforeAll(async () => {
  await initLdk();
});

const CHANNELS = ['aa', 'bb', 'cc'].map((c) => `${c.repeat(32)}_0`);

/**
 * A wallet's store listed in an unlucky order (as an obfuscated VSS listing can be): monitor
 * updates and other data before the full monitors, the manager in between.
 */
async function walletStore(): Promise<MemoryKVStore> {
  const store = new MemoryKVStore();
  for (const name of CHANNELS) for (let id = 1; id <= 6; id++) await store.write('monitor_updates', name, String(id), Uint8Array.of(id));
  await store.write('payments', '', 'p1', Uint8Array.of(1));
  await store.write('', '', 'manager', Uint8Array.of(0xaa));
  for (const name of CHANNELS) await store.write('monitors', '', name, Uint8Array.of(0xff, 0xff, 1));
  return store;
}

describe('migrateStore', () => {
  it('a copy cut off at any point never leaves channel state without a monitor (restore would take it for a new wallet)', async () => {
    const source = await walletStore();
    const total = (await source.listAll()).length;
    let cutsPastTheMonitors = 0;
    for (let accepted = 1; accepted < total; accepted++) {
      const inner = new MemoryKVStore(undefined, { latencyMs: 1 });
      await expect(migrateStore(source, cutOffAfter(inner, accepted), { concurrency: 4 })).rejects.toBeInstanceOf(StoreIOError);
      const copied = inner.server.keys();
      const monitors = copied.filter((k) => k.primaryNamespace === 'monitors');
      const others = copied.filter((k) => k.primaryNamespace !== 'monitors');
      // Every full monitor is in the target before any other key is written.
      if (others.length > 0) {
        cutsPastTheMonitors++;
        expect(monitors.length, `cut off after ${accepted} writes`).toBe(CHANNELS.length);
      }
      expect(copied.some((k) => k.key === 'manager')).toBe(false);
    }
    // The ordering check above ran: some cuts fell after other keys were being written.
    expect(cutsPastTheMonitors).toBeGreaterThan(0);
  });

  it('an async progress callback that rejects fails the migration (never an unhandled rejection)', async () => {
    const source = await walletStore();
    const target = new MemoryKVStore();
    const onProgress = async (p: { copied: number }): Promise<void> => {
      await new Promise((r) => setTimeout(r, 1));
      if (p.copied === 3) throw new Error('progress display went away');
    };
    await expect(migrateStore(source, target, { onProgress, concurrency: 2 })).rejects.toThrow('progress display went away');
    expect(target.server.get('', '', 'manager')).toBeUndefined();
  });

  it('with overwrite, refuses a target holding a ChannelManager the source does not have (another wallet\'s manager would pair with these monitors)', async () => {
    const source = new MemoryKVStore();
    await source.write('monitors', '', CHANNELS[0], Uint8Array.of(0xff, 0xff, 1));
    const target = new MemoryKVStore();
    await target.write('', '', 'manager', Uint8Array.of(0xbb));
    const err = await migrateStore(source, target, { overwrite: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationVerificationError);
    expect((err as Error).message).toMatch(/target holds a ChannelManager \(\/\/manager\) and the source has none/);
    expect(target.server.keys()).toHaveLength(1); // nothing copied
  });
});
