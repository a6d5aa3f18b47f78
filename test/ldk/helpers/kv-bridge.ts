/**
 * Helpers for the KVStore bridge tests: a store whose every operation throws, and every bridge
 * operation's outcome as a string (the IOError kind, 'ok', or what escaped into the caller).
 */
import * as ldk from 'lightningdevkit';
import { toLdkKVStore, toLdkMigratableKVStore, type PersistenceLogger } from '../../../src/ldk/index.js';
import type { SyncKVStore } from '../../../src/store/types.js';

/** A SyncKVStore whose every operation throws `thrown()`. */
export function throwingStore(thrown: () => unknown): SyncKVStore {
  const fail = (): never => {
    throw thrown();
  };
  return { read: fail, write: fail, remove: fail, list: fail, listAll: fail };
}

/** A bridge result as 'ok' or its IOError kind's name. */
export function ioKindOf(result: { is_ok(): boolean }): string {
  return result.is_ok() ? 'ok' : ldk.IOError[(result as unknown as { err: ldk.IOError }).err];
}

/**
 * Every KVStore and MigratableKVStore operation through the bridge, with its IOError (or 'ok');
 * an exception escaping the bridge (which would land inside LDK's WASM) shows as `threw <name>`.
 */
export function allOperations(store: SyncKVStore, log: PersistenceLogger): string[] {
  const kv = toLdkKVStore(store, { log });
  const migratable = toLdkMigratableKVStore(store, { log });
  const outcome = (call: () => { is_ok(): boolean }): string => {
    try {
      return ioKindOf(call());
    } catch (err) {
      return `threw ${(err as Error).name}`;
    }
  };
  return [
    outcome(() => kv.read('monitors', '', 'k')),
    outcome(() => kv.write('monitors', '', 'k', Uint8Array.of(1))),
    outcome(() => kv.remove('monitors', '', 'k', false)),
    outcome(() => kv.list('monitors', '')),
    outcome(() => migratable.list_all_keys()),
  ];
}
