/**
 * The client decodes replies as the reference client (prost) does: keys and lengths in
 * non-minimal ("padded") varints are read as the values they spell, in replies and error replies.
 */
import { describe, expect, it } from 'vitest';
import { ConflictError, NO_RETRY, VssClient } from '../../src/client/index.js';
import { int64ToBigInt, vss } from '../../src/protocol/index.js';
import { mockFetch } from './mock-vss.js';

const BASE = 'http://vss.test/vss';
const text = (s: string) => [...new TextEncoder().encode(s)];
/** `value` (below 128) as a varint of exactly `size` bytes. */
const padded = (value: number, size: number): number[] => [value | 0x80, ...new Array<number>(size - 2).fill(0x80), 0x00];

describe('VssClient reads padded varints in replies', () => {
  it('decodes a GetObjectResponse and an ErrorResponse whose keys and lengths are padded', async () => {
    // KeyValue { key: 'k1', version: 3, value: 'v1' } with every key and length padded.
    const item = [...padded(0x0a, 6), ...padded(2, 7), ...text('k1'), ...padded(0x10, 2), 3, ...padded(0x1a, 10), ...padded(2, 9), ...text('v1')];
    // GetObjectResponse { value (field 2): item }, its key and length padded too.
    const reply = Uint8Array.from([...padded(0x12, 8), ...padded(item.length, 6), ...item]);
    const conflict = Uint8Array.from([...padded(0x08, 4), 1, ...padded(0x12, 7), ...padded(4, 10), ...text('lost')]);
    const { fetch } = mockFetch((_request, index) => (index === 0 ? { body: reply } : { status: 409, body: conflict }));
    const client = new VssClient(BASE, { fetch, retryPolicy: NO_RETRY });

    const value = (await client.getObject({ storeId: 's', key: 'k1' })).value;
    expect([value?.key, int64ToBigInt(value?.version), new TextDecoder().decode(value?.value ?? new Uint8Array())]).toEqual(['k1', 3n, 'v1']);

    const error = await client.putObjects({ storeId: 's', transactionItems: [] }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConflictError);
    expect((error as ConflictError).serverMessage).toBe('lost');
    expect((error as ConflictError).errorCode).toBe(vss.ErrorCode.CONFLICT_EXCEPTION);
  });
});
