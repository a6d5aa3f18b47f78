/**
 * Bytes from another JavaScript realm (a `node:vm` context standing in for jsdom, an iframe or
 * a vm sandbox) in the client: values to put, a sigs-auth key, request bodies given to
 * nodeHttpFetch, and a fetch implementation whose response chunks are that realm's. Real server
 * (memory backend, noop auth) over loopback. What is not bytes is still refused, as before.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  headerProviderFromConfig,
  HeaderProviderError,
  InvalidRequestError,
  NO_RETRY,
  NoSuchKeyError,
  nodeHttpFetch,
  SigsAuthProvider,
  VssClient,
  VssClientError,
  type FetchFunction,
  type FetchResponse,
} from '../../src/client/index.js';
import { readBodyCapped } from '../../src/client/http.js';
import { bigIntToInt64, keyValue, vss } from '../../src/protocol/index.js';
import { startVssServer } from '../../src/server/index.js';
import { foreignBytes, foreignValue } from '../helpers/foreign-realm.js';

const SECRET = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const utf8 = (s: string) => new TextEncoder().encode(s);
const text = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * A fetch over the real one whose response bodies come out as the other realm's Uint8Arrays,
 * each chunk split in two (so the client both takes a lone chunk and joins several), through a
 * web-stream reader or, with `iterate`, an async iterable (a Node Readable's way).
 */
function foreignChunkFetch(iterate = false): FetchFunction {
  return async (url, init) => {
    const real = await fetch(url, init);
    const chunks = async function* (): AsyncGenerator<Uint8Array> {
      const reader = real.body?.getReader();
      for (let next = await reader?.read(); next && !next.done; next = await reader!.read()) {
        const chunk = next.value;
        const half = chunk.byteLength >> 1;
        if (half > 0) yield foreignBytes(chunk.subarray(0, half));
        yield foreignBytes(chunk.subarray(half));
      }
    };
    const iterator = chunks();
    const body: NonNullable<FetchResponse['body']> = iterate
      ? { [Symbol.asyncIterator]: () => iterator }
      : { getReader: () => ({ read: async () => iterator.next() as Promise<{ done: boolean; value?: Uint8Array }>, cancel: async () => void (await iterator.return(undefined)) }) };
    return { status: real.status, headers: real.headers, arrayBuffer: () => real.arrayBuffer(), body };
  };
}

/** A fetch answering 200 with the VSS header and a body that yields exactly `chunks`. */
function chunkFetch(chunks: unknown[]): { fetch: FetchFunction; cancelled: () => boolean } {
  let cancelled = false;
  const fetch: FetchFunction = async () => {
    const queue = [...chunks];
    return {
      status: 200,
      headers: new Headers({ 'vss-protocol-version': '0', 'content-type': 'text/html' }),
      arrayBuffer: async () => new ArrayBuffer(0),
      body: {
        getReader: () => ({
          read: async () => (queue.length === 0 ? { done: true } : { done: false, value: queue.shift() as Uint8Array }),
          cancel: async () => void (cancelled = true),
        }),
      },
    };
  };
  return { fetch, cancelled: () => cancelled };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => {
      throw new Error('expected a rejection');
    },
    (error: Error) => error,
  );
}

describe('SigsAuthProvider with a key of another realm', () => {
  it('signs exactly as with this realm\'s key, directly and from a config', async () => {
    const now = () => 1_700_000_000_000;
    const expected = await new SigsAuthProvider(SECRET, {}, { now }).getHeaders();
    expect(await new SigsAuthProvider(foreignBytes(SECRET), {}, { now }).getHeaders()).toEqual(expected);
    expect(await headerProviderFromConfig({ kind: 'sigs', secretKey: foreignBytes(SECRET) }, { now }).getHeaders(new Uint8Array())).toEqual(expected);
  });

  it('keeps its own copy of a foreign key (wiping the caller\'s does not change the signature)', async () => {
    const now = () => 1_700_000_000_000;
    const key = foreignBytes(SECRET);
    const provider = new SigsAuthProvider(key, {}, { now });
    key.fill(0);
    expect(await provider.getHeaders()).toEqual(await new SigsAuthProvider(SECRET, {}, { now }).getHeaders());
  });

  it('still refuses what is not bytes, with the same error', () => {
    const refused: unknown[] = [new Int8Array(SECRET), foreignValue('new Int8Array(32).fill(1)'), new DataView(SECRET.slice().buffer), Array.from(SECRET), 'k'.repeat(32), new Uint8ClampedArray(SECRET)];
    for (const key of refused) {
      let error: unknown;
      try {
        new SigsAuthProvider(key as Uint8Array);
      } catch (caught) {
        error = caught;
      }
      expect(error, Object.prototype.toString.call(key)).toBeInstanceOf(HeaderProviderError);
      expect((error as Error).message).toBe('sigs-auth secret key is not a valid secp256k1 secret key');
    }
  });
});

describe('VssClient and bytes of another realm, against the real server', () => {
  let server: Awaited<ReturnType<typeof startVssServer>>;
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', auth: { kind: 'noop' }, port: 0 });
  });
  afterAll(async () => {
    await server?.close();
  });
  const storeId = () => `cross-realm-${randomUUID().slice(0, 12)}`;

  for (const [label, transport] of [
    ['the platform fetch', undefined],
    ['nodeHttpFetch', () => nodeHttpFetch()],
  ] as const) {
    it(`putObjects stores a foreign value as its bytes (${label})`, async () => {
      const client = new VssClient(server.url, { fetch: transport?.(), retryPolicy: NO_RETRY });
      const id = storeId();
      const value = foreignBytes(utf8('from another realm'));
      await client.putObjects({
        storeId: id,
        globalVersion: bigIntToInt64(0n),
        transactionItems: [{ key: 'plain', version: bigIntToInt64(0n), value }, keyValue('built', 0n, foreignBytes([0, 1, 255]))],
      });
      const plain = await client.getObject({ storeId: id, key: 'plain' });
      expect(new TextDecoder().decode(plain.value!.value!)).toBe('from another realm');
      expect([...(await client.getObject({ storeId: id, key: 'built' })).value!.value!]).toEqual([0, 1, 255]);
      // An empty foreign value, and a foreign value in a deleteObject.
      await client.putObjects({ storeId: id, transactionItems: [{ key: 'empty', version: bigIntToInt64(0n), value: foreignBytes([]) }] });
      expect([...(await client.getObject({ storeId: id, key: 'empty' })).value!.value!]).toEqual([]);
      await client.deleteObject({ storeId: id, keyValue: { key: 'plain', version: bigIntToInt64(-1n), value: foreignBytes([1]) } });
      expect(await rejection(client.getObject({ storeId: id, key: 'plain' }))).toBeInstanceOf(NoSuchKeyError);
    });
  }

  it('still refuses a value that is not bytes, with the same messages and nothing sent', async () => {
    let sent = 0;
    const client = new VssClient(server.url, { fetch: (url, init) => (sent++, fetch(url, init)), retryPolicy: NO_RETRY });
    const cases: [unknown, string][] = [
      [new Int8Array([1]), 'Int8Array'],
      [foreignValue('new Int8Array([1])'), 'Int8Array'],
      [new Uint8ClampedArray([1]), 'Uint8ClampedArray'],
      [new DataView(new ArrayBuffer(1)), 'DataView'],
      [[1, 2], 'Array'],
      ['aGVsbG8', 'string'],
    ];
    for (const [value, got] of cases) {
      const error = await rejection(client.putObjects({ storeId: 's', transactionItems: [{ key: 'k', version: bigIntToInt64(0n), value: value as Uint8Array }] }));
      expect(error).toBeInstanceOf(InvalidRequestError);
      expect(error.message).toBe(`Request sent to VSS Storage was invalid: putObjects.transactionItems[0].value must be a Uint8Array, got ${got}`);
    }
    expect(sent).toBe(0);
  });

  for (const iterate of [false, true]) {
    it(`reads replies whose body chunks are another realm's (${iterate ? 'async iterable' : 'reader'})`, async () => {
      const writer = new VssClient(server.url, { retryPolicy: NO_RETRY });
      const id = storeId();
      const big = Uint8Array.from({ length: 100_000 }, (_, i) => (i * 7) % 256);
      await writer.putObjects({ storeId: id, transactionItems: [keyValue('small', 0n, utf8('hi')), keyValue('big', 0n, big)] });
      const client = new VssClient(server.url, { fetch: foreignChunkFetch(iterate), retryPolicy: NO_RETRY });
      const small = (await client.getObject({ storeId: id, key: 'small' })).value!;
      expect(small.key).toBe('small');
      expect(new TextDecoder().decode(small.value!)).toBe('hi');
      // Handed back as this realm's bytes, whatever realm the fetch made them in.
      expect(small.value).toBeInstanceOf(Uint8Array);
      const large = (await client.getObject({ storeId: id, key: 'big' })).value!.value!;
      expect(large).toBeInstanceOf(Uint8Array);
      expect(large).toEqual(big);
      // An error reply read from foreign chunks.
      expect(await rejection(client.getObject({ storeId: id, key: 'missing' }))).toBeInstanceOf(NoSuchKeyError);
      const listed = await client.listKeyVersions({ storeId: id });
      expect(listed.keyVersions.map((k) => k.key).sort()).toEqual(['big', 'small']);
    });
  }

  it('decodes a reply that arrived as one foreign chunk into this realm\'s bytes', async () => {
    const reply = vss.GetObjectResponse.encode({ value: keyValue('k', 3n, utf8('one chunk')) }).finish();
    const { fetch } = chunkFetch([foreignBytes(reply)]);
    const got = (await new VssClient('http://vss.test/vss', { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' })).value!;
    expect(text(got.value!)).toBe('one chunk');
    // The value is a view of the reply: it must not be the other realm's.
    expect(got.value).toBeInstanceOf(Uint8Array);
  });

  it('quotes an undecodable reply that arrived as foreign chunks', async () => {
    const { fetch } = chunkFetch([foreignBytes(utf8('<html>captive')), foreignBytes(utf8(' portal</html>'))]);
    const error = await rejection(new VssClient('http://vss.test/vss', { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }));
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.message).toContain('content-type text/html, 27 bytes: "<html>captive portal</html>"');
  });

  it('readBodyCapped returns one foreign chunk as this realm\'s bytes over the same memory', async () => {
    const chunk = foreignBytes([1, 2, 3]);
    const body = await readBodyCapped(await chunkFetch([chunk]).fetch('http://vss.test', {}), 10);
    expect(body).toBeInstanceOf(Uint8Array);
    expect([...body]).toEqual([1, 2, 3]);
    body[0] = 9;
    expect(chunk[0]).toBe(9);
    // A foreign chunk still counts toward the cap.
    const tooLarge = chunkFetch([foreignBytes([1, 2]), foreignBytes([3, 4])]);
    const error = await rejection(readBodyCapped(await tooLarge.fetch('http://vss.test', {}), 3));
    expect(error.message).toMatch(/exceeds the 3-byte limit/);
    expect(tooLarge.cancelled()).toBe(true);
  });

  it('still refuses chunks that are not bytes, with the same message', async () => {
    const cases: [unknown, string][] = [
      [new Int8Array([1]), 'Int8Array'],
      [foreignValue('new Int8Array([1])'), 'Int8Array'],
      [new DataView(new ArrayBuffer(1)), 'DataView'],
      [[1, 2], 'Array'],
      ['AQI=', 'string'],
    ];
    for (const [chunk, what] of cases) {
      const { fetch, cancelled } = chunkFetch([chunk]);
      const error = await rejection(new VssClient('http://vss.test/vss', { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }));
      expect(error).toBeInstanceOf(VssClientError);
      expect(error.message).toBe(`InternalError: the fetch implementation's response body yielded a chunk that is not a Uint8Array (${what})`);
      expect(cancelled()).toBe(true);
    }
  });

  it('nodeHttpFetch sends a foreign request body', async () => {
    const request = vss.PutObjectRequest.encode({ storeId: storeId(), transactionItems: [keyValue('k', 0n, utf8('v'))] }).finish();
    const response = await nodeHttpFetch()(`${server.url}/putObjects`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: foreignBytes(request) as BodyInit });
    expect(response.status).toBe(200);
    await response.arrayBuffer();
    // Still refused: bodies it cannot send.
    await expect(nodeHttpFetch()(`${server.url}/putObjects`, { method: 'POST', body: new DataView(request.buffer) as BodyInit })).rejects.toThrow(
      'nodeHttpFetch sends string, Uint8Array or ArrayBuffer bodies only',
    );
    await expect(nodeHttpFetch()(`${server.url}/putObjects`, { method: 'POST', body: new Int8Array(request) as BodyInit })).rejects.toThrow(
      'nodeHttpFetch sends string, Uint8Array or ArrayBuffer bodies only',
    );
  });

  it('sends a put with a foreign value under sigs auth with a foreign key', async () => {
    const sigsServer = await startVssServer({ backend: server.backend, auth: { kind: 'signature' }, port: 0 });
    try {
      const client = new VssClient(sigsServer.url, { headerProvider: new SigsAuthProvider(foreignBytes(SECRET)), retryPolicy: NO_RETRY });
      await client.putObjects({ storeId: 'sigs', transactionItems: [keyValue('k', 0n, foreignBytes([4, 2]))] });
      expect((await client.getObject({ storeId: 'sigs', key: 'k' })).value!.value).toEqual(new Uint8Array([4, 2]));
      // Another key is another user.
      const other = new VssClient(sigsServer.url, { headerProvider: new SigsAuthProvider(new Uint8Array(32).fill(7)), retryPolicy: NO_RETRY });
      expect(await rejection(other.getObject({ storeId: 'sigs', key: 'k' }))).toBeInstanceOf(NoSuchKeyError);
    } finally {
      await sigsServer.close();
    }
  });
});
