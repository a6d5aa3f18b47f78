/**
 * A VSS server behind a private certificate authority (TLS terminated by a proxy with a
 * self-signed certificate): `tlsCa` in the client config reaches both the async API and the
 * blocking view's worker, which cannot be handed a fetch function. Without it the store refuses
 * the certificate at open (never an empty store, never plain HTTP).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vssClientFromConfig, nodeHttpFetch } from '../../src/client/index.js';
import { StoreOpenError, VssStore } from '../../src/store/index.js';
import { startServerThread, type ServerThread } from './helpers/server-thread.js';

const cert = readFileSync(new URL('../client/fixtures/localhost-cert.pem', import.meta.url), 'utf8');
const key = readFileSync(new URL('../client/fixtures/localhost-key.pem', import.meta.url), 'utf8');
const SEED = new Uint8Array(64).fill(0x42);
const bytes = (s: string) => new TextEncoder().encode(s);

/**
 * A TLS-terminating proxy in a child process: the blocking view blocks this thread, so nothing
 * the requests need may run on it. Prints its port, then forwards to `target` over plain HTTP.
 */
const PROXY = `
const https = require('node:https'), http = require('node:http');
const [cert, key, target] = JSON.parse(process.argv[1]);
const t = new URL(target);
const server = https.createServer({ cert, key }, (req, res) => {
  const up = http.request({ host: t.hostname, port: t.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
    res.writeHead(r.statusCode, r.headers);
    r.pipe(res);
  });
  up.on('error', () => res.destroy());
  req.pipe(up);
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

describe('a VSS server behind a private CA', () => {
  let server: ServerThread;
  let proxy: ChildProcess;
  let httpsUrl: string;
  beforeAll(async () => {
    server = await startServerThread({ backend: 'memory', auth: { kind: 'noop' } });
    proxy = spawn(process.execPath, ['-e', PROXY, JSON.stringify([cert, key, server.url])], { stdio: ['ignore', 'pipe', 'inherit'] });
    const [line] = (await once(createInterface({ input: proxy.stdout! }), 'line')) as [string];
    httpsUrl = `https://127.0.0.1:${line.trim()}${new URL(server.url).pathname}`;
  });
  afterAll(async () => {
    proxy?.kill();
    await server?.close();
  });

  it('is reached with tlsCa by the async API and by the blocking view', async () => {
    const store = await VssStore.open({ storeId: 'private-ca', client: { baseUrl: httpsUrl, retry: 'none', tlsCa: cert }, keys: { seed: SEED } });
    try {
      await store.write('ns', '', 'async', bytes('over tls'));
      expect(await store.read('ns', '', 'async')).toEqual(bytes('over tls'));
      const sync = store.toSyncStore();
      sync.write('ns', '', 'sync', bytes('blocking over tls'));
      expect(sync.read('ns', '', 'sync')).toEqual(bytes('blocking over tls'));
      expect(sync.read('ns', '', 'async')).toEqual(bytes('over tls'));
    } finally {
      await store.close();
    }
  });

  it('is refused at open without it: the certificate error, not an empty store', async () => {
    const error = await VssStore.open({ storeId: 'private-ca', client: { baseUrl: httpsUrl, retry: 'none' }, keys: { seed: SEED } }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(StoreOpenError);
    let text = '';
    for (let e: unknown = error; e instanceof Error; e = e.cause) text += ` ${e.message}`;
    expect(text).toMatch(/self[- ]signed|certificate/i);
  });

  it('refuses tlsCa together with a fetch of the caller, and a tlsCa that is not PEM text', () => {
    expect(() => vssClientFromConfig({ baseUrl: httpsUrl, tlsCa: cert }, { fetch: nodeHttpFetch() })).toThrow(/tlsCa applies to the built-in Node transport/);
    expect(() => vssClientFromConfig({ baseUrl: httpsUrl, tlsCa: 42 as unknown as string })).toThrow(/tlsCa must be a PEM string/);
  });
});
