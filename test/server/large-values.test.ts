/**
 * How large values flow through the server: how many value-sized buffers a request allocates.
 * Copies of a 128 MiB value cost about 0.4 s each of synchronous work on a busy machine, during
 * which every other client's request waits; and several at once multiply the server's memory.
 */
import protobuf from 'protobufjs/minimal.js';
import { afterEach, describe, expect, it } from 'vitest';
import { bigIntToInt64, int64ToBigInt, keyValue, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../../src/protocol/index.js';
import { NO_RETRY, VssClient, type FetchFunction } from '../../src/client/index.js';
import { MemoryBackend } from '../../src/server/index.js';
import { OPERATIONS } from '../../src/server/operations.js';
import { NOOP_USER_TOKEN } from '../../src/server/auth/index.js';
import { decryptStorable, encryptStorable } from '../../src/crypto/storable.js';

const MiB = 1024 * 1024;

/** protobufjs allocates every writer buffer through the writer class's `alloc`; record the sizes. */
const writerClass = protobuf.Writer.create().constructor as unknown as { alloc(size: number): Uint8Array };
const originalAlloc = writerClass.alloc;
function recordWriterAllocations(): number[] {
  const sizes: number[] = [];
  writerClass.alloc = (size: number) => {
    sizes.push(size);
    return originalAlloc(size);
  };
  return sizes;
}

afterEach(() => {
  writerClass.alloc = originalAlloc;
});

function filled(size: number): Uint8Array {
  const value = new Uint8Array(size);
  for (let i = 0; i < size; i += 4093) value[i] = i & 0xff;
  return value;
}

describe('GetObject response encoding', () => {
  it('allocates one value-sized buffer and hands it out without copying', async () => {
    const backend = new MemoryBackend();
    const value = filled(8 * MiB + 3);
    const key = 'κλειδί/large';
    await backend.put(NOOP_USER_TOKEN, { storeId: 's', transactionItems: [{ key, version: 0n, value }], deleteItems: [] });

    const sizes = recordWriterAllocations();
    const body = await OPERATIONS.getObject.run(backend, NOOP_USER_TOKEN, vss.GetObjectRequest.encode({ storeId: 's', key }).finish());
    writerClass.alloc = originalAlloc;

    // protobufjs's default writer grew to the value, doubled for the nested message's length
    // prefix, and copied again in finish(): 4× the value in writer buffers.
    const allocated = sizes.reduce((sum, size) => sum + size, 0);
    expect(allocated, `writer allocations: ${sizes.join(', ')}`).toBeLessThan(value.byteLength + 1024);
    const decoded = vss.GetObjectResponse.decode(body).value as vss.KeyValue;
    expect(decoded.key).toBe(key);
    expect(int64ToBigInt(decoded.version)).toBe(1n);
    expect(Buffer.compare(decoded.value, value)).toBe(0);
  });

  it('still encodes when the estimate is exact or the value is empty', async () => {
    for (const size of [0, 1, 127, 128, 16_383, 16_384]) {
      const response = new vss.GetObjectResponse({
        value: new vss.KeyValue({ key: '\u{1F511}'.repeat(7), version: bigIntToInt64(-1n), value: filled(size) }),
      });
      const backend = { get: async () => ({ key: response.value?.key ?? '', version: -1n, value: response.value?.value ?? new Uint8Array(0) }) };
      const body = await OPERATIONS.getObject.run(
        backend as unknown as MemoryBackend,
        NOOP_USER_TOKEN,
        vss.GetObjectRequest.encode({ storeId: 's', key: response.value?.key ?? '' }).finish(),
      );
      expect(Buffer.compare(body, vss.GetObjectResponse.encode(response).finish()), `size ${size}`).toBe(0);
    }
  });
});

describe('encryptStorable of a large value', () => {
  it('returns the Storable in a buffer of its own size, encoded without growing a writer', () => {
    const value = filled(4 * MiB);
    const sizes = recordWriterAllocations();
    const storable = encryptStorable(value, 7n, new Uint8Array(32).fill(9));
    writerClass.alloc = originalAlloc;

    // One presized buffer for the blob (encrypted in place) and one for the Storable. The
    // Storable's estimate left no room for protobufjs's worst-case string reservation, so the
    // writer doubled: an 8 MiB buffer behind a 4 MiB result, for as long as the caller keeps it.
    const valueSized = sizes.filter((size) => size >= value.byteLength);
    expect(valueSized.length, `writer allocations: ${sizes.join(', ')}`).toBe(2);
    expect(storable.buffer.byteLength).toBeLessThan(value.byteLength + 1024);
    const decrypted = decryptStorable(storable, new Uint8Array(32).fill(9));
    expect(decrypted.version).toBe(7n);
    expect(Buffer.compare(decrypted.value, value)).toBe(0);
  });
});

describe('MemoryBackend keeps its own copy of a value', () => {
  it('does not keep (or share) the buffer the value was cut from', async () => {
    const backend = new MemoryBackend();
    const body = Buffer.alloc(1 << 20, 7);
    // A value as protobufjs decodes it from a request body: a view into that body.
    const value = body.subarray(100, 110);
    await backend.put('u', { storeId: 's', transactionItems: [{ key: 'k', version: 0n, value }], deleteItems: [] });
    body.fill(9);
    const stored = await backend.get('u', 's', 'k');
    expect(Array.from(stored!.value)).toEqual(Array(10).fill(7));
    expect(stored!.value.buffer.byteLength).toBe(10);
  });
});

describe("the client's PutObjects encoding", () => {
  it('writes a large value into one buffer of its bound, not four', async () => {
    const value = filled(8 * MiB + 5);
    let sent: Uint8Array | undefined;
    const fetch: FetchFunction = async (_url, init) => {
      sent = init?.body as Uint8Array;
      return new Response(new Uint8Array(0), { status: 200, headers: { [PROTOCOL_VERSION_HEADER]: PROTOCOL_VERSION } });
    };
    const client = new VssClient('http://vss.test/vss', { fetch, retryPolicy: NO_RETRY });
    const sizes = recordWriterAllocations();
    await client.putObjects({ storeId: 'store-ü', globalVersion: bigIntToInt64(3n), transactionItems: [keyValue('κλειδί', 2n, value), keyValue('small', 0n, new Uint8Array([1]))] });
    writerClass.alloc = originalAlloc;
    const allocated = sizes.reduce((sum, size) => sum + size, 0);
    expect(allocated, `writer allocations: ${sizes.join(', ')}`).toBeLessThan(value.byteLength + 1024);
    const decoded = vss.PutObjectRequest.decode(sent!);
    expect(decoded.storeId).toBe('store-ü');
    expect(int64ToBigInt(decoded.globalVersion)).toBe(3n);
    expect(decoded.transactionItems.map((item) => item.key)).toEqual(['κλειδί', 'small']);
    expect(Buffer.compare(decoded.transactionItems[0].value!, value)).toBe(0);
  });
});
