/**
 * How the store follows ListKeyVersions pages: tokens fed back verbatim, the server's default
 * page size, and termination against servers that misbehave (a repeated token, a cycle of
 * tokens, a token on an empty page, a missing token field). The server's operations run
 * in-process on a MemoryBackend; a wrapper rewrites listing replies where a test needs it.
 */
import { describe, expect, it } from 'vitest';
import type { FetchFunction, FetchResponse } from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import { MemoryBackend } from '../../src/server/index.js';
import { StoreIOError, StoreOpenError, VssStore } from '../../src/store/index.js';
import { directFetch } from './helpers/model-transport.js';

const SEED = new Uint8Array(64).fill(0x17);
const bytes = (s: string) => new TextEncoder().encode(s);

type ListRewrite = (request: vss.ListKeyVersionsRequest, response: vss.ListKeyVersionsResponse) => vss.ListKeyVersionsResponse;

/** The in-process server, with listing replies passed through `rewrite` and listing requests recorded. */
function listingServer(backend: MemoryBackend) {
  const requests: vss.ListKeyVersionsRequest[] = [];
  const state: { rewrite?: ListRewrite } = {};
  const inner = directFetch(backend);
  const fetch: FetchFunction = async (url, init) => {
    const response = await inner(url, init);
    if (!url.endsWith('/listKeyVersions')) return response;
    const request = vss.ListKeyVersionsRequest.decode(init.body as Uint8Array);
    requests.push(request);
    if (!state.rewrite || response.status !== 200) return response;
    const original = vss.ListKeyVersionsResponse.decode(new Uint8Array(await response.arrayBuffer()));
    const body = vss.ListKeyVersionsResponse.encode(state.rewrite(request, original)).finish();
    const rewritten: FetchResponse = { ...response, arrayBuffer: async () => Uint8Array.from(body).buffer, body: null };
    return rewritten;
  };
  return { fetch, requests, state };
}

async function openStore(fetch: FetchFunction, storeId = 'paging'): Promise<VssStore> {
  return VssStore.open({ storeId, client: { baseUrl: 'http://vss.test/vss', retry: 'none' }, clientRuntime: { fetch }, keys: { seed: SEED } });
}

/** A store with `count` keys in namespace ("ns", ""). */
async function populated(count: number) {
  const backend = new MemoryBackend();
  const server = listingServer(backend);
  const store = await openStore(server.fetch);
  const keys = Array.from({ length: count }, (_, i) => `key${String(i).padStart(4, '0')}`);
  for (let i = 0; i < keys.length; i += 50) {
    await store.writeBatch(keys.slice(i, i + 50).map((key) => ({ primaryNamespace: 'ns', secondaryNamespace: '', key, value: bytes(key) })));
  }
  server.requests.length = 0;
  return { backend, server, store, keys };
}

describe('store listings follow page tokens', () => {
  it('list and listAll page through more than 100 keys, feeding tokens back verbatim with the default page size', async () => {
    const { server, store, keys } = await populated(250);
    expect((await store.list('ns', '')).sort()).toEqual(keys);
    expect(server.requests).toHaveLength(3);
    expect(server.requests.every((r) => r.pageSize == null)).toBe(true);
    expect(server.requests[0].pageToken).toBeNull();
    const prefix = server.requests[0].keyPrefix;
    expect(prefix).toBeTruthy();
    expect(server.requests.every((r) => r.keyPrefix === prefix)).toBe(true);
    server.requests.length = 0;
    // The marker is left out of listAll; every key is there exactly once.
    const all = await store.listAll();
    expect(all.map((k) => k.key).sort()).toEqual(keys);
    expect(server.requests).toHaveLength(3);
    expect(server.requests.every((r) => r.keyPrefix == null)).toBe(true);
    await store.close();
  });

  it('a server that repeats a page token fails the listing with StoreIOError instead of looping', async () => {
    const { server, store } = await populated(150);
    // Every later page answers the first page again, with the same token.
    let first: vss.ListKeyVersionsResponse | undefined;
    server.state.rewrite = (request, response) => (request.pageToken == null ? (first = response) : (first as vss.ListKeyVersionsResponse));
    const failure = await store.list('ns', '').catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StoreIOError);
    expect((failure as Error).message).toMatch(/repeated a page token/);
    expect(server.requests).toHaveLength(2);
    await store.close();
  });

  it('a cycle of page tokens is caught too', async () => {
    const { server, store } = await populated(150);
    let calls = 0;
    server.state.rewrite = (_request, response) => new vss.ListKeyVersionsResponse({ keyVersions: response.keyVersions, nextPageToken: ['7', '5'][calls++ % 2] });
    await expect(store.listAll()).rejects.toBeInstanceOf(StoreIOError);
    expect(server.requests).toHaveLength(3);
    await store.close();
  });

  it('an empty page that still carries a token is followed, and the listing ends where the server ends it', async () => {
    const { server, store, keys } = await populated(150);
    // The server inserts an empty page (with a token that leads back to the real first page)
    // ahead of the real pages: AIP-158 allows a page to be empty without being the last.
    server.state.rewrite = (request, response) => {
      if (request.pageToken == null) return new vss.ListKeyVersionsResponse({ keyVersions: [], nextPageToken: '9223372036854775807', globalVersion: response.globalVersion });
      return response;
    };
    expect((await store.list('ns', '')).sort()).toEqual(keys);
    expect(server.requests.map((r) => r.pageToken)).toEqual([null, '9223372036854775807', expect.any(String)]);
    await store.close();
  });

  it('a page without next_page_token ends the listing (LDK Node would restart from the first page forever)', async () => {
    const { server, store, keys } = await populated(150);
    server.state.rewrite = (_request, response) => {
      const copy = new vss.ListKeyVersionsResponse({ keyVersions: response.keyVersions });
      return copy;
    };
    const listed = await store.list('ns', '');
    expect(listed).toHaveLength(100);
    expect(keys).toEqual(expect.arrayContaining(listed));
    expect(server.requests).toHaveLength(1);
    await store.close();
  });

  it('opening against a server that repeats page tokens fails with StoreOpenError, not a hang', async () => {
    const { backend, store } = await populated(150);
    await store.close();
    const server = listingServer(backend);
    server.state.rewrite = (_request, response) => new vss.ListKeyVersionsResponse({ keyVersions: response.keyVersions, nextPageToken: '1' });
    const failure = await openStore(server.fetch).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(StoreOpenError);
    expect((failure as Error).message).toMatch(/repeated a page token/);
  });
});
