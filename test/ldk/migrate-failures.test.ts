/**
 * migrateStore on sources that are not clean LDK stores: keys no LDK store accepts (refused
 * before anything is copied, every bad key named), and a key that disappears between the
 * listing and its read (a node still running, said as such).
 */
import { describe, expect, it } from 'vitest';
import { MigrationVerificationError, migrateStore } from '../../src/ldk/index.js';
import { KeyNotFoundError } from '../../src/store/errors.js';
import type { AsyncKVStore, StoreKey } from '../../src/store/types.js';
import { MemoryKVStore } from './helpers/memory-store.js';

const MONITOR = `${'aa'.repeat(32)}_0`;
const at = (primaryNamespace: string, secondaryNamespace: string, key: string): StoreKey => ({ primaryNamespace, secondaryNamespace, key });

/** A read-only source listing exactly `entries`, whatever their keys (as a foreign store could). */
function listingSource(entries: [StoreKey, Uint8Array][]): AsyncKVStore & { entries: [StoreKey, Uint8Array][] } {
  const find = (p: string, s: string, k: string): [StoreKey, Uint8Array] | undefined =>
    entries.find(([a]) => a.primaryNamespace === p && a.secondaryNamespace === s && a.key === k);
  return {
    entries,
    read: async (p, s, k) => {
      const entry = find(p, s, k);
      if (!entry) throw new KeyNotFoundError(p, s, k);
      return entry[1];
    },
    write: async () => {
      throw new Error('read-only source');
    },
    remove: async () => undefined,
    list: async (p, s) => entries.filter(([a]) => a.primaryNamespace === p && a.secondaryNamespace === s).map(([a]) => a.key),
    listAll: async () => entries.map(([a]) => a),
  };
}

describe('migrateStore with keys no LDK store accepts', () => {
  const invalid: [string, StoreKey][] = [
    ['a temp file', at('monitors', '', `${MONITOR}.tmp`)],
    ['a key over 120 characters', at('payments', '', 'x'.repeat(121))],
    ['a non-ASCII key', at('payments', '', 'caf\u00e9')],
    ['an empty key', at('payments', '', '')],
    ['a secondary namespace without a primary one', at('', 'sub', 'k')],
  ];
  for (const [what, bad] of invalid) {
    it(`refuses ${what} before copying anything, naming it`, async () => {
      const source = listingSource([
        [at('monitors', '', MONITOR), Uint8Array.of(1)],
        [at('payments', '', 'p1'), Uint8Array.of(2)],
        [bad, Uint8Array.of(3)],
        [at('', '', 'manager'), Uint8Array.of(4)],
      ]);
      const target = new MemoryKVStore();
      const err = await migrateStore(source, target).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MigrationVerificationError);
      expect((err as Error).message).toContain(JSON.stringify([bad.primaryNamespace, bad.secondaryNamespace, bad.key]));
      expect((err as Error).message).toMatch(/1 key\(s\) that are not valid LDK keys.*\(nothing was copied\)$/);
      // Nothing written: once the source is cleaned, a plain re-run (no overwrite) completes.
      expect(target.server.keys()).toEqual([]);
      source.entries.splice(2, 1);
      await expect(migrateStore(source, target)).resolves.toMatchObject({ keys: 3 });
    });
  }
});

describe('migrateStore from a source that changes under it', () => {
  it('a listed key gone when it is read fails as a changed source (stop the node), and the manager is never copied', async () => {
    const source = new MemoryKVStore();
    await source.write('monitors', '', MONITOR, Uint8Array.of(1));
    for (let id = 1; id <= 3; id++) await source.write('monitor_updates', MONITOR, String(id), Uint8Array.of(id));
    await source.write('', '', 'manager', Uint8Array.of(9));
    // A running node consolidating its deltas: after the full monitor is copied, it removes them.
    const onProgress = async (p: { last: StoreKey }): Promise<void> => {
      if (p.last.primaryNamespace === 'monitors') for (let id = 1; id <= 3; id++) await source.remove('monitor_updates', MONITOR, String(id), false);
    };
    const target = new MemoryKVStore();
    const err = await migrateStore(source, target, { onProgress, concurrency: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationVerificationError);
    expect((err as Error).message).toMatch(
      new RegExp(`^monitor_updates/${MONITOR}/1 was listed in the source but is gone: the source changed while it was being copied; stop the node and migrate again into an empty target$`),
    );
    expect((err as Error).cause).toBeInstanceOf(KeyNotFoundError);
    expect(target.server.get('', '', 'manager')).toBeUndefined();
  });
});

describe('migrateStore from an empty source', () => {
  it('is refused by default (a mistyped store id opens empty), nothing written; allowEmptySource migrates it', async () => {
    const target = new MemoryKVStore();
    const writes: StoreKey[] = [];
    const watched: AsyncKVStore = {
      ...target,
      read: (p, s, k) => target.read(p, s, k),
      list: (p, s) => target.list(p, s),
      remove: (p, s, k, lazy) => target.remove(p, s, k, lazy),
      listAll: () => target.listAll(),
      write: async (p, s, k, v) => {
        writes.push(at(p, s, k));
        await target.write(p, s, k, v);
      },
    };
    const refused = await migrateStore(listingSource([]), watched).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(MigrationVerificationError);
    expect((refused as Error).message).toBe(
      'the source holds no keys: check its store id, server and keys (a mistyped store id opens as an empty store). Nothing was copied; pass allowEmptySource: true to migrate an empty store deliberately',
    );
    expect(writes).toEqual([]);
    const result = await migrateStore(listingSource([]), watched, { allowEmptySource: true });
    expect(result.keys).toBe(0);
    expect(writes).toEqual([]);
  });
});
