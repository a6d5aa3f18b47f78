/**
 * VssStore with bytes of another JavaScript realm (a `node:vm` context standing in for jsdom,
 * an iframe or a vm sandbox): a foreign seed or foreign keys, foreign values written through the
 * async and the blocking API, and replies whose body chunks are foreign. Values that are not
 * bytes are still refused with the same InvalidValueError.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FetchFunction, FetchResponse } from '../../src/client/index.js';
import { deriveVssKeys } from '../../src/crypto/index.js';
import { startVssServer } from '../../src/server/index.js';
import { InvalidValueError, VssStore, type VssStoreOptions } from '../../src/store/index.js';
import { foreignBytes, foreignValue } from '../helpers/foreign-realm.js';
import { startServerThread, type ServerThread } from './helpers/server-thread.js';

const SEED = Uint8Array.from({ length: 64 }, (_, i) => 64 - i);
const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const RETRY = { baseDelayMs: 1, maxAttempts: 2, maxTotalDelayMs: 50, maxJitterMs: 0 };

/** The platform fetch, with every response body chunk handed over as a foreign Uint8Array. */
const foreignChunkFetch: FetchFunction = async (url, init) => {
  const real = await fetch(url, init);
  const iterator = (async function* () {
    const reader = real.body?.getReader();
    for (let next = await reader?.read(); next && !next.done; next = await reader!.read()) yield foreignBytes(next.value);
  })();
  const body: NonNullable<FetchResponse['body']> = {
    getReader: () => ({ read: async () => iterator.next() as Promise<{ done: boolean; value?: Uint8Array }>, cancel: async () => void (await iterator.return(undefined)) }),
  };
  return { status: real.status, headers: real.headers, arrayBuffer: () => real.arrayBuffer(), body };
};

const NOT_BYTES: [unknown, string][] = [
  [new Int8Array([1]), 'an Int8Array'],
  [foreignValue('new Int8Array([1])'), 'an Int8Array'],
  [new Uint8ClampedArray([1]), 'a Uint8ClampedArray'],
  [new DataView(new ArrayBuffer(1)), 'a DataView'],
  [[1, 2], 'an array'],
  ['aGVsbG8', 'a string'],
];

describe('VssStore (async API) and bytes of another realm', () => {
  let server: Awaited<ReturnType<typeof startVssServer>>;
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });
  const open = (extra: Partial<VssStoreOptions> = {}, storeId = `cross-realm-${randomUUID().slice(0, 12)}`) =>
    VssStore.open({ storeId, client: { baseUrl: server.url, retry: RETRY }, keys: { seed: SEED }, ...extra });

  it('opens with a foreign seed, writes foreign values, and the same keys read them back', async () => {
    const storeId = `cross-realm-${randomUUID().slice(0, 12)}`;
    const store = await open({ keys: { seed: foreignBytes(SEED) } }, storeId);
    await store.write('ns', 'sub', 'k', foreignBytes(utf8('one')));
    await store.writeBatch([
      { primaryNamespace: 'ns', secondaryNamespace: 'sub', key: 'a', value: foreignBytes(utf8('two')) },
      { primaryNamespace: 'ns', secondaryNamespace: 'sub', key: 'b', value: foreignBytes([]) },
    ]);
    await store.close();
    // Opened again with this realm's seed: the foreign seed derived the same keys.
    const again = await open({}, storeId);
    expect(text(await again.read('ns', 'sub', 'k'))).toBe('one');
    expect(text(await again.read('ns', 'sub', 'a'))).toBe('two');
    expect(await again.read('ns', 'sub', 'b')).toEqual(new Uint8Array(0));
    await again.close();
  });

  it('opens with foreign data and obfuscation keys', async () => {
    const storeId = `cross-realm-${randomUUID().slice(0, 12)}`;
    const { dataEncryptionKey, obfuscationMasterKey } = deriveVssKeys(SEED);
    const store = await open({ keys: { dataEncryptionKey: foreignBytes(dataEncryptionKey), obfuscationMasterKey: foreignBytes(obfuscationMasterKey) } }, storeId);
    await store.write('', '', 'manager', foreignBytes(utf8('m')));
    await store.close();
    const again = await open({}, storeId);
    expect(text(await again.read('', '', 'manager'))).toBe('m');
    await again.close();
  });

  it('reads through a fetch whose body chunks are foreign, and hands back this realm\'s bytes', async () => {
    const storeId = `cross-realm-${randomUUID().slice(0, 12)}`;
    const writer = await open({}, storeId);
    await writer.write('ns', '', 'k', utf8('stored'));
    await writer.close();
    const store = await open({ clientRuntime: { fetch: foreignChunkFetch } }, storeId);
    const value = await store.read('ns', '', 'k');
    expect(value).toBeInstanceOf(Uint8Array);
    expect(text(value)).toBe('stored');
    await store.write('ns', '', 'k', foreignBytes(utf8('rewritten')));
    expect(text(await store.read('ns', '', 'k'))).toBe('rewritten');
    expect(await store.list('ns', '')).toEqual(['k']);
    await store.close();
  });

  it('still refuses values that are not bytes, with the same InvalidValueError', async () => {
    const store = await open();
    for (const [value, got] of NOT_BYTES) {
      const message = `the value for ["ns","","k"] must be a Uint8Array, got ${got}`;
      await expect(store.write('ns', '', 'k', value as Uint8Array)).rejects.toThrow(new InvalidValueError(message));
      await expect(store.writeBatch([{ primaryNamespace: 'ns', secondaryNamespace: '', key: 'k', value: value as Uint8Array }])).rejects.toThrow(new InvalidValueError(message));
    }
    expect(await store.list('ns', '')).toEqual([]);
    await store.close();
  });
});

describe('VssStore blocking view and bytes of another realm', () => {
  // The blocking view freezes this thread: the server must run in another one.
  let server: ServerThread;
  beforeAll(async () => {
    server = await startServerThread({ backend: 'memory', auth: { kind: 'noop' } });
  }, 60_000);
  afterAll(async () => {
    await server?.close();
  });

  it('writes a foreign value synchronously, and refuses what is not bytes as before', async () => {
    const store = await VssStore.open({ storeId: `cross-realm-${randomUUID().slice(0, 12)}`, client: { baseUrl: server.url, retry: RETRY }, keys: { seed: SEED } });
    const sync = store.toSyncStore();
    // Not copied on the way in (unlike the async write): the foreign value itself reaches the encryption.
    sync.write('ns', '', 'k', foreignBytes(utf8('sync')));
    expect(text(sync.read('ns', '', 'k'))).toBe('sync');
    expect(text(await store.read('ns', '', 'k'))).toBe('sync');
    for (const [value, got] of NOT_BYTES) {
      expect(() => sync.write('ns', '', 'k', value as Uint8Array)).toThrow(new InvalidValueError(`the value for ["ns","","k"] must be a Uint8Array, got ${got}`));
    }
    expect(text(sync.read('ns', '', 'k'))).toBe('sync');
    await store.close();
  });
});
