/**
 * nodeHttpFetch, the Node transport VssStore uses by default: the real server over loopback
 * (typed errors, keep-alive), plus raw node:http servers that misbehave on purpose (no
 * answer, a body that stops halfway, a huge body, no protocol header) to check deadlines,
 * aborts and error codes.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConflictError,
  NO_RETRY,
  NoSuchKeyError,
  VersionMismatchError,
  VssClient,
  VssClientError,
  nodeHttpAvailable,
  type FetchFunction,
  nodeHttpFetch,
} from '../../src/client/index.js';
import { readBodyCapped } from '../../src/client/http.js';
import { keyValue, vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';

const bytes = (s: string) => new TextEncoder().encode(s);

/** A raw HTTP server whose handler the test chooses; counts TCP connections. */
async function rawServer(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; connections: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const server: Server = createServer(handler);
  server.on('connection', (s) => {
    connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('nodeHttpFetch against the real VSS server', () => {
  let server: Awaited<ReturnType<typeof startVssServer>>;
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('is available in Node and carries every operation, with the server errors typed as usual', async () => {
    expect(nodeHttpAvailable()).toBe(true);
    const client = new VssClient(server.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY });
    const storeId = `node-http-${randomUUID()}`;
    await client.putObjects({ storeId, transactionItems: [keyValue('a', 0n, bytes('one')), keyValue('b', 0n, new Uint8Array(200_000).fill(7))] });
    const a = await client.getObject({ storeId, key: 'a' });
    expect(new TextDecoder().decode(a.value!.value!)).toBe('one');
    const b = await client.getObject({ storeId, key: 'b' });
    expect(b.value!.value!.length).toBe(200_000);
    expect((await client.listKeyVersions({ storeId })).keyVersions.map((k) => k.key).sort()).toEqual(['a', 'b']);
    await expect(client.getObject({ storeId, key: 'missing' })).rejects.toBeInstanceOf(NoSuchKeyError);
    await expect(client.putObjects({ storeId, transactionItems: [keyValue('a', 0n, bytes('again'))] })).rejects.toBeInstanceOf(ConflictError);
    await client.deleteObject({ storeId, keyValue: keyValue('a', -1n) });
    await expect(client.getObject({ storeId, key: 'a' })).rejects.toBeInstanceOf(NoSuchKeyError);
  });
});

describe('nodeHttpFetch transport behaviour', () => {
  it('reuses one connection for sequential requests (keep-alive)', async () => {
    const raw = await rawServer((req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('vss-protocol-version', '0');
        res.end(vss.ListKeyVersionsResponse.encode({ keyVersions: [] }).finish());
      });
    });
    const client = new VssClient(raw.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY });
    for (let i = 0; i < 5; i++) await client.listKeyVersions({ storeId: 's' });
    expect(raw.connections()).toBe(1);
    await raw.close();
  });

  it('a refused connection is a network error that keeps its code', async () => {
    const raw = await rawServer(() => {});
    const url = raw.url;
    await raw.close();
    const error = await new VssClient(url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('network');
    expect((error.cause as NodeJS.ErrnoException).code).toBe('ECONNREFUSED');
  });

  it('the deadline covers a server that never answers and a body that stops halfway', async () => {
    const silent = await rawServer(() => {});
    const e1 = await new VssClient(silent.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY, timeoutMs: 200 }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(e1).toBeInstanceOf(VssClientError);
    expect(e1.reason).toBe('timeout');
    await silent.close();

    const halfway = await rawServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'vss-protocol-version': '0', 'content-length': '1000' });
      res.write(new Uint8Array(10));
    });
    const e2 = await new VssClient(halfway.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY, timeoutMs: 200 }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(e2).toBeInstanceOf(VssClientError);
    expect(e2.reason).toBe('timeout');
    await halfway.close();
  });

  it('a connection cut while the body arrives is a network error, and the caller\'s signal aborts', async () => {
    const cut = await rawServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'vss-protocol-version': '0', 'content-length': '1000' });
      res.write(new Uint8Array(10), () => res.socket?.destroy());
    });
    const e1 = await new VssClient(cut.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(e1).toBeInstanceOf(VssClientError);
    expect(e1.reason).toBe('network');
    await cut.close();

    const silent = await rawServer(() => {});
    const controller = new AbortController();
    const pending = new VssClient(silent.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }, { signal: controller.signal }).catch((e) => e);
    setTimeout(() => controller.abort(), 20);
    const e2 = await pending;
    expect(e2).toBeInstanceOf(VssClientError);
    expect(e2.reason).toBe('aborted');
    await silent.close();
  });

  it('a reply without the protocol header is refused and its body released; an oversized body is cancelled', async () => {
    const raw = await rawServer((req, res) => {
      req.resume();
      if (req.url?.endsWith('/getObject')) res.end(new Uint8Array(100));
      else res.end(new Uint8Array(5_000));
    });
    const fetchFn = nodeHttpFetch();
    const e1 = await new VssClient(raw.url, { fetch: fetchFn, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).catch((e) => e);
    expect(e1).toBeInstanceOf(VersionMismatchError);
    const response = await fetchFn(`${raw.url}/other`, { method: 'POST', body: new Uint8Array(1) });
    expect(response.status).toBe(200);
    await expect(readBodyCapped(response, 1_000)).rejects.toThrow(/exceeds the 1000-byte limit/);
    await raw.close();
  });

  it('a streamed body without Content-Length is refused soon after it passes the cap, not after it has all arrived', async () => {
    const TOTAL = 64 * 1024 * 1024;
    const CAP = 256 * 1024;
    let sent = 0;
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    const raw = await rawServer((req, res) => {
      req.resume();
      sent = 0;
      res.writeHead(200); // chunked: no Content-Length to refuse up front
      const pump = (): void => {
        while (sent < TOTAL && !res.destroyed) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
    for (const fetchFn of [nodeHttpFetch(), globalThis.fetch as FetchFunction]) {
      const response = await fetchFn(`${raw.url}/stream`, { method: 'GET' });
      const error = await readBodyCapped(response, CAP).catch((e) => e);
      expect(error).toBeInstanceOf(VssClientError);
      expect(error.reason).toBe('decode');
      expect(error.message).toMatch(/exceeds the 262144-byte limit/);
      // Socket buffers let a few MiB through before the refusal lands; nowhere near all 64 MiB.
      expect(sent).toBeLessThan(16 * 1024 * 1024);
    }
    // The same body under a cap it fits reads whole.
    const fits = await readBodyCapped(await nodeHttpFetch()(`${raw.url}/stream`, { method: 'GET' }), TOTAL);
    expect(fits.byteLength).toBe(TOTAL);
    expect(fits.every((b) => b === 0x61)).toBe(true);
    await raw.close();
  });

  it('sends string bodies and Headers objects, and refuses other schemes', async () => {
    const seen: { body: string; header: string | undefined }[] = [];
    const raw = await rawServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ body: Buffer.concat(chunks).toString(), header: req.headers['x-test'] as string | undefined });
        res.end('ok');
      });
    });
    const fetchFn = nodeHttpFetch();
    const response = await fetchFn(raw.url, { method: 'POST', body: 'héllo', headers: new Headers({ 'x-test': 'yes' }) });
    expect(new TextDecoder().decode(await response.arrayBuffer())).toBe('ok');
    expect(seen).toEqual([{ body: 'héllo', header: 'yes' }]);
    await expect(fetchFn('ftp://example.invalid/x', { method: 'GET' })).rejects.toThrow(/unsupported URL scheme/);
    await raw.close();
  });
});

describe('nodeHttpFetch over HTTPS', () => {
  // A self-signed certificate for localhost / 127.0.0.1 (test fixture, not a secret).
  const cert = readFileSync(new URL('./fixtures/localhost-cert.pem', import.meta.url), 'utf8');
  const key = readFileSync(new URL('./fixtures/localhost-key.pem', import.meta.url), 'utf8');

  async function httpsVssLikeServer(): Promise<{ url: string; close(): Promise<void> }> {
    const server = createHttpsServer({ cert, key }, (req, res) => {
      req.resume();
      req.on('end', () => {
        res.setHeader('vss-protocol-version', '0');
        res.end(vss.GetObjectResponse.encode({ value: keyValue('k', 3n, bytes('over tls')) }).finish());
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    return {
      url: `https://127.0.0.1:${port}`,
      close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
    };
  }

  it('trusts a server whose certificate chains to the configured CA', async () => {
    const server = await httpsVssLikeServer();
    try {
      const client = new VssClient(server.url, { fetch: nodeHttpFetch({ ca: cert }), retryPolicy: NO_RETRY });
      const { value } = await client.getObject({ storeId: 's', key: 'k' });
      expect(new TextDecoder().decode(value!.value!)).toBe('over tls');
    } finally {
      await server.close();
    }
  });

  it('refuses an untrusted certificate with a network error (never falls back to plain HTTP)', async () => {
    const server = await httpsVssLikeServer();
    try {
      const client = new VssClient(server.url, { fetch: nodeHttpFetch(), retryPolicy: NO_RETRY });
      const error = await client.getObject({ storeId: 's', key: 'k' }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(VssClientError);
      expect((error as VssClientError).reason).toBe('network');
      expect(String((error as Error).cause ?? error)).toMatch(/self[- ]signed|certificate/i);
    } finally {
      await server.close();
    }
  });
});
