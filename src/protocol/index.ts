/**
 * The VSS wire contract: the generated protobuf messages plus the few constants and
 * conversions both the server and the client need. Nothing here does I/O.
 */
import Long from 'long';
import protobuf from 'protobufjs/minimal.js';
import { vss } from './generated/vss.js';

export { vss };

/** Response header every VSS response carries, errors included. */
export const PROTOCOL_VERSION_HEADER = 'vss-protocol-version';
/** The only protocol version this implementation speaks. */
export const PROTOCOL_VERSION = '0';

/** Operation paths, relative to the VSS base URL (e.g. `http://host:8080/vss`). */
export const VSS_PATHS = {
  getObject: '/getObject',
  putObjects: '/putObjects',
  deleteObject: '/deleteObject',
  listKeyVersions: '/listKeyVersions',
} as const;
export type VssOperation = keyof typeof VSS_PATHS;

/** Key under which the reference server stores the store-wide global version. */
export const GLOBAL_VERSION_KEY = 'global_version';
/** Version meaning "write or delete regardless of the stored version". */
export const UNCONDITIONAL_VERSION = -1n;

export const INT64_MAX = (1n << 63n) - 1n;
export const INT64_MIN = -(1n << 63n);

/** An int64 as protobufjs may hand it to us: a Long, a JS number, or nothing. */
export type WireInt64 = Long | number | null | undefined;

/**
 * Converts a protobuf int64 (Long or number) to a bigint; absent counts as 0. A Long is read by
 * its 64 bits, as protobufjs encodes it: an unsigned Long of 2^64 - 1 is the int64 -1 on the wire,
 * so the result always lies in the int64 range.
 */
export function int64ToBigInt(value: WireInt64): bigint {
  if (value === null || value === undefined) return 0n;
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new RangeError(`int64 value ${value} is not an exact integer`);
    return BigInt(value);
  }
  return BigInt.asIntN(64, (BigInt(value.high >>> 0) << 32n) | BigInt(value.low >>> 0));
}

/** Converts a bigint in the int64 range to the Long protobufjs encodes. */
export function bigIntToInt64(value: bigint): Long {
  if (value > INT64_MAX || value < INT64_MIN) throw new RangeError(`${value} does not fit in an int64`);
  return Long.fromString(value.toString(), false, 10);
}

/** Builds a KeyValue message from plain values. */
export function keyValue(key: string, version: bigint, value: Uint8Array = new Uint8Array(0)): vss.KeyValue {
  return new vss.KeyValue({ key, version: bigIntToInt64(version), value });
}

/** Whether a decoded message actually carried an `optional` field (proto3 presence). */
export function hasField<T extends object>(message: T, field: keyof T & string): boolean {
  return Object.prototype.hasOwnProperty.call(message, field) && (message as Record<string, unknown>)[field] != null;
}

/** With the `u` flag a surrogate class matches only a surrogate that is not half of a pair. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;

/**
 * Whether `text` holds a UTF-16 surrogate without its partner (an emoji cut in half by `slice`,
 * a JSON `\ud800` escape). Such a string has no UTF-8 form: encoding it yields U+FFFD, so two
 * distinct strings would become one key, store id or user on the wire.
 */
export function hasLoneSurrogate(text: string): boolean {
  return LONE_SURROGATE.test(text);
}

/** At most this many bytes encode a 64-bit varint; the last may only carry bit 63. */
const MAX_VARINT_BYTES = 10;

/**
 * protobufjs drops whatever a varint carries beyond 64 bits (a version with junk in its tenth
 * byte reads as -1, an unconditional write) and skips unknown varints of any length, where
 * prost, and so the reference server, refuses the body. It also refuses tags and lengths of more
 * than 5 bytes, which prost reads as any other varint: a non-minimal ("padded") encoding such as
 * 8a 80 80 80 80 00 is the value it spells. So every varint is read here as prost's decode_varint
 * reads it (up to 10 bytes, the tenth at most 1), and what is done with it is prost's too: a key
 * above u32::MAX is refused, an int32 or enum keeps the low 32 bits, a length beyond the end is
 * refused by the caller's bounds check.
 */
class StrictReader extends protobuf.Reader {
  /** Bits 32 to 63 of the varint the last `varint()` read. */
  private high = 0;

  /**
   * Reads one varint as prost does and returns its low 32 bits (unsigned), leaving bits 32 to 63
   * in `high`. A varint cut short by the end (of the message being read) is a RangeError, as in
   * protobufjs; nothing is consumed unless the whole varint is valid.
   */
  private varint(): number {
    const buf = this.buf;
    const start = this.pos;
    let low = 0;
    let high = 0;
    for (let index = 0; index < MAX_VARINT_BYTES; index++) {
      const pos = start + index;
      if (pos >= this.len) throw new RangeError(`index out of range: ${start} + ${index + 1} > ${this.len}`);
      const byte = buf[pos];
      const bits = byte & 0x7f;
      if (index < 4) low |= bits << (7 * index);
      else if (index === 4) {
        low |= bits << 28;
        high = bits >>> 4;
      } else high |= bits << (7 * index - 32);
      if (byte < 0x80) {
        if (index === MAX_VARINT_BYTES - 1 && byte > 1) throw new Error('invalid varint encoding: more than 64 bits');
        this.pos = pos + 1;
        this.high = high >>> 0;
        return low >>> 0;
      }
    }
    throw new Error(`invalid varint encoding: longer than ${MAX_VARINT_BYTES} bytes`);
  }

  /** Also what int32, sint32 and enums read: the low 32 bits, as prost's `as i32` / `as u32`. */
  override uint32(): number {
    return this.varint();
  }

  /** A field key: any varint up to u32::MAX (prost's decode_key), padded or not. */
  override tag(): number {
    const low = this.varint();
    if (this.high !== 0) throw new Error(`invalid key value: ${(BigInt(this.high) << 32n) | BigInt(low)}`);
    return low;
  }

  /**
   * A length prefix, as its full value: one that does not fit what remains (anything from 2^32
   * up certainly does not) is refused by every caller's bounds check, as prost refuses it.
   */
  override size(): number {
    const low = this.varint();
    return this.high * 2 ** 32 + low;
  }

  /** A 64-bit value (a version) from the same prost-checked varint. */
  override int64(): Long {
    const low = this.varint();
    return new protobuf.util.LongBits(low, this.high).toLong(false) as Long;
  }

  override skip(length?: number): this {
    if (length === undefined) {
      this.varint();
      return this;
    }
    super.skip(length);
    return this;
  }
}

/**
 * A reader for the generated `decode` functions that refuses malformed varints as prost does
 * (see StrictReader). Pass it instead of the bytes: `vss.GetObjectRequest.decode(strictReader(body))`.
 */
export function strictReader(body: Uint8Array): protobuf.Reader {
  return new StrictReader(body);
}

/**
 * Reads tags and lengths as the strict decode does, padded ones included: bytes the count gave up
 * on would still be decoded, every item built, uncounted. Varint values are skipped without being
 * judged, as protobufjs skips them: refusing a malformed one is the decode's job, and the count
 * only needs to find the items.
 */
class FieldCountingReader extends StrictReader {
  override skip(length?: number): this {
    protobuf.Reader.prototype.skip.call(this, length);
    return this;
  }
}

/**
 * Counts the top-level occurrences of the given field numbers in an encoded message, stopping
 * as soon as the count exceeds `limit`; undefined if the bytes are not a well-formed message
 * (the full decode then reports it). Decoding first would materialise every item: a body of
 * nothing but empty items is half a million objects per MiB, all built on one thread before a
 * count could refuse them.
 */
export function countTopLevelFields(body: Uint8Array, fields: readonly number[], limit: number): number | undefined {
  const reader = new FieldCountingReader(body);
  let count = 0;
  try {
    while (reader.pos < reader.len) {
      const tag = reader.tag();
      if (fields.includes(tag >>> 3) && ++count > limit) return count;
      reader.skipType(tag & 7);
    }
  } catch {
    return undefined;
  }
  return count;
}

/**
 * A protobufjs writer whose backing buffer already holds `capacity` bytes: encoding a large
 * message into it neither grows (re-allocating and copying) nor, with `finish(true)`, needs a final
 * copy. The default writer grows to fit a value, doubles again when a nested message's length
 * prefix needs more than a byte, then copies the whole in finish(): four value-sized buffers at
 * once. `capacity` must be an upper bound (a string reserves 3 bytes per UTF-16 unit plus 5).
 */
export function presizedWriter(capacity: number): protobuf.Writer {
  const writer = protobuf.Writer.create();
  writer.buf = (writer.constructor as unknown as { alloc(size: number): Uint8Array }).alloc(capacity);
  return writer;
}

/** Upper bound of one KeyValue's bytes beyond its key and value: its field tag and length, key, version, value headers. */
const KEY_VALUE_OVERHEAD = (1 + 5) + (1 + 5) + (1 + 10) + (1 + 5);

/** Upper bound of a KeyValue's encoded size (a key reserves 3 bytes per UTF-16 unit). */
export function keyValueSizeBound(item: { key?: string | null; value?: Uint8Array | null } | null | undefined): number {
  return (item?.value?.byteLength ?? 0) + 3 * (item?.key?.length ?? 0) + KEY_VALUE_OVERHEAD;
}

