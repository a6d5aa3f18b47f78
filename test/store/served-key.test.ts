/**
 * A GetObject reply that carries another key than the one asked for (a broken server, or a
 * proxy caching POSTs by URL) is refused as such, on a read and on opening (the schema marker);
 * every GetObject of the store goes through the same check.
 * Without the check the value fails to decrypt (the key is its AAD) and reads as a wrong seed.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { nodeHttpFetch, type FetchFunction } from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import { DataIntegrityError, StoreOpenError, VssStore } from '../../src/store/index.js';

const SEED = new Uint8Array(64).fill(0x5a);

/**
 * Rewrites the key of GetObject requests while `swap.to` is set (the server then answers another
 * key), and remembers the store key of the last GetObject asked for.
 */
function keySwappingFetch(): { fetch: FetchFunction; swap: { to?: string; lastAsked?: string } } {
  const inner = nodeHttpFetch();
  const swap: { to?: string; lastAsked?: string } = {};
  const fetch: FetchFunction = async (url, init) => {
    if (String(url).endsWith('/getObject') && init?.body instanceof Uint8Array) {
      const request = vss.GetObjectRequest.decode(init.body);
      swap.lastAsked = request.key;
      if (swap.to === undefined) return inner(url, init);
      request.key = swap.to;
      return inner(url, { ...init, body: vss.GetObjectRequest.encode(request).finish() as Uint8Array<ArrayBuffer> });
    }
    return inner(url, init);
  };
  return { fetch, swap };
}

describe('a GetObject reply for another key', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function storeWithSwap(storeId: string) {
    const transport = keySwappingFetch();
    const store = await VssStore.open({ storeId, client: { baseUrl: server.url, retry: 'none' }, clientRuntime: { fetch: transport.fetch }, keys: { seed: SEED } });
    return { store, swap: transport.swap };
  }

  it('fails a read with DataIntegrityError naming the mix-up, not as a value that does not decrypt', async () => {
    const { store, swap } = await storeWithSwap('served-key-read');
    await store.write('ns', '', 'a', new Uint8Array([1]));
    await store.write('ns', '', 'b', new Uint8Array([2]));
    await store.read('ns', '', 'b');
    swap.to = swap.lastAsked;
    const error = await store.read('ns', '', 'a').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DataIntegrityError);
    expect((error as Error).message).toMatch(/answered a read of store key .* with the value of another key/);
    swap.to = undefined;
    expect(await store.read('ns', '', 'a')).toEqual(new Uint8Array([1]));
    await store.close();
  });

  it('fails opening with the mix-up named, not as a wrong seed', async () => {
    const first = await storeWithSwap('served-key-open');
    await first.store.write('ns', '', 'x', new Uint8Array([3]));
    await first.store.read('ns', '', 'x');
    const other = first.swap.lastAsked;
    await first.store.close();
    const transport = keySwappingFetch();
    transport.swap.to = other;
    const error = await VssStore.open({ storeId: 'served-key-open', client: { baseUrl: server.url, retry: 'none' }, clientRuntime: { fetch: transport.fetch }, keys: { seed: SEED } }).catch(
      (e: unknown) => e,
    );
    const chain = [error, (error as Error).cause];
    expect(chain.some((e) => e instanceof DataIntegrityError || e instanceof StoreOpenError)).toBe(true);
    expect(String((error as Error).message) + String(((error as Error).cause as Error | undefined)?.message)).toMatch(/with the value of another key/);
    expect((error as Error).message).not.toMatch(/wrong seed/);
  });
});
