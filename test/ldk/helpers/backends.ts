/**
 * Where the LDK tests store data: a fixture that opens store clients by store id, can take
 * the server away and bring it back, and closes everything at the end.
 *
 * `vssBackend` is the real thing: VssStore (encryption, conditional writes) over HTTP to the
 * project's VSS server, which runs in a worker thread (the blocking sync store would
 * otherwise block the very thread that has to answer it).
 */
import { createHash } from 'node:crypto';
import type { AsyncKVStore, SyncKVStore } from '../../../src/store/types.js';
import { StoreLayout, VssStore } from '../../../src/store/index.js';
import { KeyObfuscator, deriveVssKeys } from '../../../src/crypto/index.js';
import { VssClient } from '../../../src/client/index.js';
import { VssServerThread, type ThreadBackendOption } from '../../../harness/server-thread.js';
import { MemoryKVStore, MemoryServer } from './memory-store.js';

export interface StoreBackend {
  readonly label: string;
  /** A new client of store `storeId` (a fresh instance, as on app start or another device). */
  open(storeId: string, options?: { seed?: Uint8Array }): Promise<AsyncKVStore>;
  /** A blocking client of store `storeId`. */
  openSync(storeId: string): Promise<SyncKVStore>;
  /** Makes the server unreachable (connections refused). */
  stop(): Promise<void>;
  /** Brings it back with all data. */
  resume(): Promise<void>;
  /** Flips a byte of a stored ciphertext on the server, behind every client's back. */
  tamper?(storeId: string, primaryNamespace: string, secondaryNamespace: string, key: string): Promise<void>;
  close(): Promise<void>;
}

/** The 64-byte wallet seed the fixture uses for a store id (stable, so reopening works). */
export function storeSeed(storeId: string): Uint8Array {
  return createHash('sha512').update(`ldk-vss test seed ${storeId}`).digest();
}

/** VssStore over HTTP to a real VSS server in a worker thread. */
export async function vssBackend(server: ThreadBackendOption = { kind: 'pglite' }): Promise<StoreBackend> {
  const thread = await VssServerThread.start(server);
  const stores: VssStore[] = [];
  const open = async (storeId: string, options: { seed?: Uint8Array } = {}): Promise<VssStore> => {
    const store = await VssStore.open({
      storeId,
      // No client-level retries: the LDK layer retries with its own backoff, and a stopped
      // server must surface quickly.
      client: { baseUrl: thread.url, retry: 'none', timeoutMs: 5_000 },
      keys: { seed: options.seed ?? storeSeed(storeId) },
    });
    stores.push(store);
    return store;
  };
  return {
    label: typeof server === 'object' && 'kind' in server ? server.kind : String(server),
    open,
    openSync: async (storeId) => (await open(storeId)).toSyncStore({ deadlineMs: 10_000 }),
    stop: () => thread.stop(),
    resume: () => thread.resume(),
    tamper: async (storeId, p, s, k) => {
      const layout = new StoreLayout(1, new KeyObfuscator(deriveVssKeys(storeSeed(storeId)).obfuscationMasterKey));
      const storeKey = layout.address(p, s, k).storeKey;
      const client = new VssClient(thread.url);
      const { value } = await client.getObject({ storeId, key: storeKey });
      const bytes = Uint8Array.from(value!.value!);
      bytes[bytes.length - 1] ^= 0x01;
      await client.putObjects({ storeId, transactionItems: [{ key: storeKey, version: value!.version, value: bytes }] });
    },
    close: async () => {
      await thread.resume();
      await Promise.allSettled(stores.map((s) => s.close()));
      await thread.close();
    },
  };
}

/** PostgreSQL for the server thread when TEST_DATABASE_URL is set, in a database of its own. */
export function postgresServerOption(database: string): ThreadBackendOption | undefined {
  const base = process.env.TEST_DATABASE_URL;
  if (!base) return undefined;
  const url = new URL(base);
  url.pathname = `/${database}`;
  return { kind: 'postgres', url: url.toString(), createDatabase: true };
}

/** In-memory backend (fast unit tests of the LDK layer only). */
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
