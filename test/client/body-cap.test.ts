/**
 * The response size cap with fetch implementations whose body is not a web stream: node-fetch
 * and similar hand out a Node.js Readable (async-iterable chunks, `destroy()` but no `cancel()`
 * and no `getReader()`). The cap must apply as the chunks arrive, and refusing must release the
 * body with whatever it offers, never fail with a TypeError.
 */
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { NO_RETRY, VssClient, VssClientError, type FetchFunction, type FetchResponse } from '../../src/client/index.js';
import { readBodyCapped } from '../../src/client/http.js';
import { keyValue, vss } from '../../src/protocol/index.js';

const CHUNK = 1024;

/** A body of `chunks` chunks of CHUNK bytes, produced on demand; counts what was pulled. */
function endlessBody(chunks = 100_000) {
  const state = { pulled: 0, released: false, wholeReads: 0 };
  const chunk = new Uint8Array(CHUNK).fill(7);
  async function* generate() {
    try {
      for (let i = 0; i < chunks; i++) {
        state.pulled += 1;
        yield chunk;
      }
    } finally {
      state.released = true;
    }
  }
  const iterable = generate();
  return {
    state,
    /** What a Readable-style fetch hands out: async-iterable, no getReader, no cancel. */
    body: { [Symbol.asyncIterator]: () => iterable },
    /** arrayBuffer() drains the same stream, as node-fetch's does. */
    arrayBuffer: async () => {
      state.wholeReads += 1;
      let size = 0;
      for await (const c of iterable) size += c.byteLength;
      return new ArrayBuffer(size);
    },
  };
}

function response(parts: Partial<FetchResponse> & Pick<FetchResponse, 'arrayBuffer'>, headers: Record<string, string> = {}): FetchResponse {
  return { status: 200, headers: { get: (name: string) => headers[name.toLowerCase()] ?? null }, ...parts };
}

async function refusal(promise: Promise<unknown>): Promise<VssClientError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(VssClientError);
  return error as VssClientError;
}

describe('readBodyCapped without getReader', () => {
  it('stops reading an async-iterable body as soon as it passes the cap, and releases it', async () => {
    const fake = endlessBody();
    const error = await refusal(readBodyCapped(response({ body: fake.body, arrayBuffer: fake.arrayBuffer }), 8 * CHUNK));
    expect(error.reason).toBe('decode');
    expect(error.message).toMatch(/exceeds the 8192-byte limit/);
    expect(fake.state.wholeReads).toBe(0);
    expect(fake.state.pulled).toBe(9);
    expect(fake.state.released).toBe(true);
  });

  it('reads an async-iterable body within the cap whole, a real Node Readable included', async () => {
    const fake = endlessBody(3);
    const bytes = await readBodyCapped(response({ body: fake.body, arrayBuffer: fake.arrayBuffer }), 3 * CHUNK);
    expect(bytes).toEqual(new Uint8Array(3 * CHUNK).fill(7));
    expect(fake.state.wholeReads).toBe(0);

    const readable = Readable.from([Buffer.from('ab'), Buffer.from('cd')]);
    const body = readable as unknown as FetchResponse['body'];
    expect(await readBodyCapped(response({ body, arrayBuffer: async () => new ArrayBuffer(0) }), 4)).toEqual(new TextEncoder().encode('abcd'));
  });

  it('destroys a Node Readable that passes the cap', async () => {
    let produced = 0;
    const readable = new Readable({
      read() {
        produced += 1;
        this.push(Buffer.alloc(CHUNK, 1));
      },
    });
    const body = readable as unknown as FetchResponse['body'];
    const error = await refusal(readBodyCapped(response({ body, arrayBuffer: async () => new ArrayBuffer(0) }), 4 * CHUNK));
    expect(error.message).toMatch(/exceeds the 4096-byte limit/);
    expect(readable.destroyed).toBe(true);
    expect(produced).toBeLessThan(64);
  });

  it('refuses a declared Content-Length over the cap with a typed error when the body has destroy() but no cancel()', async () => {
    let destroyed = false;
    const body = { destroy: () => void (destroyed = true), [Symbol.asyncIterator]: () => endlessBody().body[Symbol.asyncIterator]() };
    const error = await refusal(readBodyCapped(response({ body, arrayBuffer: async () => new ArrayBuffer(0) }, { 'content-length': '100000' }), 1000));
    expect(error.message).toMatch(/response body of 100000 bytes exceeds the 1000-byte limit/);
    expect(destroyed).toBe(true);
  });

  it('refuses a chunk that is not bytes rather than letting it past the cap uncounted', async () => {
    const reader = (chunks: unknown[]) => {
      let i = 0;
      let cancelled = false;
      return {
        get cancelled() {
          return cancelled;
        },
        getReader: () => ({
          read: async () => (i < chunks.length ? { done: false, value: chunks[i++] as Uint8Array } : { done: true }),
          cancel: async () => void (cancelled = true),
        }),
        cancel: async () => undefined,
      };
    };
    const strings = reader(['x'.repeat(10_000)]);
    const error = await refusal(readBodyCapped(response({ body: strings, arrayBuffer: async () => new ArrayBuffer(0) }), 100));
    expect(error.reason).toBe('decode');
    expect(error.message).toMatch(/chunk that is not a Uint8Array \(string\)/);
    expect(strings.cancelled).toBe(true);
    const iterated = { [Symbol.asyncIterator]: async function* () { yield new ArrayBuffer(4); } };
    expect((await refusal(readBodyCapped(response({ body: iterated, arrayBuffer: async () => new ArrayBuffer(0) }), 100))).message).toMatch(/\(ArrayBuffer\)/);
  });

  it('still reads a body that offers nothing but arrayBuffer() (React Native), and refuses it once read if too large', async () => {
    const small = response({ body: null, arrayBuffer: async () => new Uint8Array([1, 2, 3]).buffer });
    expect(await readBodyCapped(small, 3)).toEqual(new Uint8Array([1, 2, 3]));
    const large = response({ arrayBuffer: async () => new ArrayBuffer(5000) });
    expect((await refusal(readBodyCapped(large, 4096))).message).toMatch(/response body of 5000 bytes exceeds the 4096-byte limit/);
  });
});

describe('VssClient with a fetch whose bodies are Node Readables', () => {
  it('decodes replies read through the async iterator', async () => {
    const reply = vss.GetObjectResponse.encode({ value: keyValue('k', 3n, new Uint8Array([9])) }).finish();
    const fetch: FetchFunction = async () =>
      response(
        {
          body: Readable.from([Buffer.from(reply.subarray(0, 2)), Buffer.from(reply.subarray(2))]) as unknown as FetchResponse['body'],
          arrayBuffer: async () => {
            throw new Error('arrayBuffer() should not be used when the body can be iterated');
          },
        },
        { 'vss-protocol-version': '0' },
      );
    const client = new VssClient('http://vss.test/vss', { fetch, retryPolicy: NO_RETRY });
    const got = await client.getObject({ storeId: 's', key: 'k' });
    expect(got.value?.value).toEqual(new Uint8Array([9]));
  });
});
