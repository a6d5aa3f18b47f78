/**
 * Which HTTP transport a VssStore uses: in Node, the lighter nodeHttpFetch unless the caller
 * passes a fetch. Observed from the wire: Node's built-in fetch (undici) sends
 * `sec-fetch-mode`, node:http does not.
 */
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startVssServer } from '../../src/server/index.js';
import { VssStore } from '../../src/store/index.js';

const SEED = new Uint8Array(64).fill(0x3c);

describe('VssStore transport', () => {
  let server: Awaited<ReturnType<typeof startVssServer>>;
  let proxyUrl: string;
  let closeProxy: () => Promise<void>;
  const seen: boolean[] = [];
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
    const target = new URL(server.url);
    // Records whether each request came from fetch, and forwards it unchanged.
    const proxy = createServer((req, res) => {
      seen.push(req.headers['sec-fetch-mode'] !== undefined);
      const upstream = httpRequest({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}${target.pathname}`;
    closeProxy = () => new Promise((resolve) => proxy.close(() => resolve()));
  });
  afterAll(async () => {
    await closeProxy?.();
    await server?.close();
  });

  it('uses nodeHttpFetch in Node by default, and the fetch the caller passes otherwise', async () => {
    seen.length = 0;
    const store = await VssStore.open({ storeId: `transport-${randomUUID()}`, client: { baseUrl: proxyUrl }, keys: { seed: SEED } });
    await store.write('ns', '', 'k', new Uint8Array([1]));
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((fromFetch) => !fromFetch)).toBe(true);
    await store.close();

    seen.length = 0;
    const withFetch = await VssStore.open({
      storeId: `transport-${randomUUID()}`,
      client: { baseUrl: proxyUrl },
      keys: { seed: SEED },
      clientRuntime: { fetch: (url, init) => fetch(url, init) },
    });
    await withFetch.write('ns', '', 'k', new Uint8Array([1]));
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((fromFetch) => fromFetch)).toBe(true);
    await withFetch.close();
  });
});
