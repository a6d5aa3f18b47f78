/**
 * Where the LDK tests store data: a fixture that opens store clients by store id, can take
 * the server away and bring it back, and can read what the server holds independently of
 * the node under test.
 */
import type { AsyncKVStore, SyncKVStore } from '../../../src/store/types.js';
import { MemoryKVStore, MemoryServer } from './memory-store.js';

export interface StoreBackend {
  readonly label: string;
  /** A new client of store `storeId` (a fresh instance, as on app start or another device). */
  open(storeId: string): Promise<AsyncKVStore>;
  /** A blocking client of store `storeId`. */
  openSync(storeId: string): Promise<SyncKVStore>;
  /** Makes the server unreachable. */
  stop(): Promise<void>;
  /** Brings it back with all data. */
  resume(): Promise<void>;
  close(): Promise<void>;
}

/** In-memory backend (unit tests of the LDK layer only). */
export function memoryBackend(): StoreBackend & { server(storeId: string): MemoryServer } {
  const servers = new Map<string, MemoryServer>();
  const server = (storeId: string): MemoryServer => {
    let s = servers.get(storeId);
    if (!s) servers.set(storeId, (s = new MemoryServer()));
    return s;
  };
  return {
    label: 'memory',
    server,
    open: async (storeId) => new MemoryKVStore(server(storeId)),
    openSync: async (storeId) => new MemoryKVStore(server(storeId)).toSyncStore(),
    stop: async () => {
      for (const s of servers.values()) s.outage = true;
    },
    resume: async () => {
      for (const s of servers.values()) s.outage = false;
    },
    close: async () => {},
  };
}
