/**
 * Deterministic fuzzing of the four operations' request bodies over real loopback HTTP: random
 * bytes, valid requests mutated at the wire level (bit flips, every truncation, duplicated
 * fields, wrong wire types, overlong varints, impossible lengths, garbage items, unknown fields of
 * every wire type, groups, field numbers 0 and 2^29) and valid edge requests. Every answer must
 * be one the operation can give (200, 400 INVALID_REQUEST, 404 NO_SUCH_KEY on reads, 409 CONFLICT
 * on PutObjects) with the version header and a decodable body, a refused write must change
 * nothing, and the server must keep serving. Seeds are fixed: a failure names the body in hex.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigIntToInt64, countTopLevelFields, hasField, int64ToBigInt, INT64_MAX, INT64_MIN, keyValue, vss, type VssOperation } from '../../src/protocol/index.js';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { MAX_KEY_LENGTH, MAX_PUT_ITEM_COUNT, MAX_STORE_ID_LENGTH } from '../../src/server/limits.js';
import { errorOf, send, text, type RawResponse } from './helpers.js';

// ---------------------------------------------------------------------------------------
// A wire-level message model, independent of protobufjs, so bodies can be broken at will.

type Field =
  | { n: number; varint: bigint; pad?: number }
  | { n: number; bytes: number[] }
  | { n: number; msg: Field[] }
  /** Bytes spliced in as they are (unknown fields, groups, invalid tags). */
  | { raw: number[] };

/** LEB128 of `value` taken as unsigned (int64 sends negatives as 2^64 + v), padded to `minBytes`. */
function varint(value: bigint, minBytes = 1): number[] {
  let rest = value < 0n ? BigInt.asUintN(64, value) : value;
  const digits: number[] = [];
  do {
    digits.push(Number(rest & 0x7fn));
    rest >>= 7n;
  } while (rest > 0n);
  while (digits.length < minBytes) digits.push(0);
  return digits.map((d, i) => (i < digits.length - 1 ? d | 0x80 : d));
}

const tag = (n: number, wireType: number) => varint((BigInt(n) << 3n) | BigInt(wireType));

function encodeField(field: Field): number[] {
  if ('raw' in field) return field.raw;
  if ('varint' in field) return [...tag(field.n, 0), ...varint(field.varint, field.pad)];
  const payload = 'msg' in field ? encode(field.msg) : field.bytes;
  return [...tag(field.n, 2), ...varint(BigInt(payload.length)), ...payload];
}

const encode = (fields: readonly Field[]): number[] => fields.flatMap(encodeField);
const utf8 = (s: string) => [...text(s)];
const str = (n: number, s: string): Field => ({ n, bytes: utf8(s) });
const int = (n: number, v: bigint): Field => ({ n, varint: v });
const kv = (key: string, version: bigint, value = ''): Field[] => [str(1, key), int(2, version), str(3, value)];

/** Deterministic PRNG (mulberry32), so every case can be replayed from its seed. */
function prng(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  const below = (n: number) => Math.floor(next() * n);
  return {
    below,
    pick: <T>(items: readonly T[]): T => items[below(items.length)],
    bytes: (n: number) => Array.from({ length: n }, () => below(256)),
  };
}
type Prng = ReturnType<typeof prng>;

// ---------------------------------------------------------------------------------------
// What each operation may answer.

const STATUS_CODE: Record<number, vss.ErrorCode> = {
  400: vss.ErrorCode.INVALID_REQUEST_EXCEPTION,
  404: vss.ErrorCode.NO_SUCH_KEY_EXCEPTION,
  409: vss.ErrorCode.CONFLICT_EXCEPTION,
};
const ALLOWED: Record<VssOperation, readonly number[]> = {
  getObject: [200, 400, 404],
  putObjects: [200, 400, 409],
  // DeleteObject is idempotent: a missing key or a wrong version is still 200 (spec §2.4).
  deleteObject: [200, 400],
  listKeyVersions: [200, 400],
};
const OPS = Object.keys(ALLOWED) as VssOperation[];
const WRITES: readonly VssOperation[] = ['putObjects', 'deleteObject'];

const hex = (body: Uint8Array) => Buffer.from(body).toString('hex');

/** A decodable successful body for `op`, checked the way a client reads it. */
function checkSuccessBody(op: VssOperation, response: RawResponse, what: string): void {
  switch (op) {
    case 'getObject':
      expect(vss.GetObjectResponse.decode(response.body).value, `${what}: value present`).toBeTruthy();
      break;
    case 'listKeyVersions': {
      const list = vss.ListKeyVersionsResponse.decode(response.body);
      expect(hasField(list, 'nextPageToken'), `${what}: next_page_token present`).toBe(true);
      break;
    }
    default:
      expect(response.body.length, `${what}: empty body`).toBe(0);
  }
}

// ---------------------------------------------------------------------------------------
// Mutations. Each says what the answer must be: exactly the unmutated request's answer
// ('same'), 400 ('invalid'), or anything the operation may answer ('any').

type Expectation = 'same' | 'invalid' | 'any';
interface Mutant {
  what: string;
  body: Uint8Array;
  expect: Expectation;
}

/** Unknown fields of every valid wire type (the decoder must skip them, as prost does). */
function unknownFields(random: Prng): Array<{ what: string; raw: number[] }> {
  const n = 5 + random.below(1000);
  return [
    { what: 'unknown varint', raw: [...tag(n, 0), ...varint(-1n)] },
    { what: 'unknown padded varint', raw: [...tag(n, 0), ...varint(7n, 10)] },
    { what: 'unknown fixed64', raw: [...tag(n, 1), ...random.bytes(8)] },
    { what: 'unknown bytes', raw: [...tag(n, 2), 3, ...random.bytes(3)] },
    { what: 'unknown empty bytes', raw: [...tag(n, 2), 0] },
    { what: 'unknown fixed32', raw: [...tag(n, 5), ...random.bytes(4)] },
    { what: 'empty group', raw: [...tag(n, 3), ...tag(n, 4)] },
    {
      what: 'group with nested content',
      raw: [...tag(n, 3), ...tag(1, 0), 5, ...tag(2, 2), 1, 0x41, ...tag(9, 3), ...tag(3, 5), 1, 2, 3, 4, ...tag(9, 4), ...tag(n, 4)],
    },
    { what: 'highest field number', raw: [...tag(2 ** 29 - 1, 0), 1] },
    { what: 'field 1000 bytes', raw: [...tag(1000, 2), 2, 0xff, 0xfe] },
  ];
}

/** Bytes no decoder may accept as the last field of a message. */
function invalidFields(random: Prng): Array<{ what: string; raw: number[] }> {
  const n = 5 + random.below(100);
  return [
    { what: 'wire type 6', raw: [...tag(n, 6), 0] },
    { what: 'wire type 7', raw: [...tag(n, 7), 0] },
    { what: 'field number 0 varint', raw: [...tag(0, 0), 1] },
    { what: 'field number 0 bytes', raw: [...tag(0, 2), 0] },
    { what: 'field number 0 group', raw: [...tag(0, 3), ...tag(0, 4)] },
    { what: 'field number 2^29', raw: [...tag(2 ** 29, 0), 1] },
    { what: 'field number 2^32', raw: [...tag(2 ** 32, 2), 0] },
    { what: 'lone end group', raw: [...tag(n, 4)] },
    { what: 'unterminated group', raw: [...tag(n, 3), ...tag(1, 0), 1] },
    { what: 'mismatched end group', raw: [...tag(n, 3), ...tag(n + 1, 4)] },
    { what: 'groups nested past the recursion limit', raw: [...Array.from({ length: 120 }, () => tag(n, 3)).flat(), ...Array.from({ length: 120 }, () => tag(n, 4)).flat()] },
    { what: 'unknown varint of 11 bytes', raw: [...tag(n, 0), ...varint(1n, 11)] },
    { what: 'unknown fixed64 cut short', raw: [...tag(n, 1), 1, 2, 3] },
    { what: 'unknown bytes longer than the body', raw: [...tag(n, 2), 0x7f] },
    { what: 'length near 2^32', raw: [...tag(n, 2), ...varint(2n ** 32n - 1n)] },
    { what: 'length 2^31', raw: [...tag(n, 2), ...varint(2n ** 31n)] },
    { what: 'length near 2^64', raw: [...tag(n, 2), ...varint(2n ** 64n - 1n)] },
  ];
}

/** Every path to a field of the model, nested messages included (for in-place mutations). */
function fieldPaths(fields: readonly Field[], prefix: number[] = []): number[][] {
  return fields.flatMap((field, i) => [[...prefix, i], ...('msg' in field ? fieldPaths(field.msg, [...prefix, i]) : [])]);
}

/** A copy of `fields` with the field at `path` replaced by `replace(field)` (zero or more fields). */
function replaceAt(fields: readonly Field[], path: readonly number[], replace: (field: Field) => Field[]): Field[] {
  const [index, ...rest] = path;
  return fields.flatMap((field, i) => {
    if (i !== index) return [field];
    if (rest.length === 0) return replace(field);
    return [{ ...field, msg: replaceAt((field as { msg: Field[] }).msg, rest, replace) } as Field];
  });
}

/** The wire type the schema gives a modelled field (every modelled field is a known one). */
const wireTypeOf = (field: Field): number | undefined => ('raw' in field ? undefined : 'varint' in field ? 0 : 2);

/** Payload bytes of a field as another wire type would carry it. */
function asWireType(n: number, wireType: number, random: Prng): number[] {
  switch (wireType) {
    case 0:
      return [...tag(n, 0), ...varint(BigInt(random.below(300)))];
    case 1:
      return [...tag(n, 1), ...random.bytes(8)];
    case 2:
      return [...tag(n, 2), 1, 0x30];
    case 3:
      return [...tag(n, 3), ...tag(n, 4)];
    default:
      return [...tag(n, 5), ...random.bytes(4)];
  }
}

function mutants(base: readonly Field[], random: Prng, count: number): Mutant[] {
  const out: Mutant[] = [];
  const add = (what: string, fields: readonly Field[] | number[], expectation: Expectation) => {
    const bytes = fields.length > 0 && typeof fields[0] === 'number' ? (fields as number[]) : encode(fields as Field[]);
    out.push({ what, body: Uint8Array.from(bytes), expect: expectation });
  };
  const paths = fieldPaths(base);
  const encoded = encode(base);
  for (let i = 0; i < count; i++) {
    const path = random.pick(paths);
    const depth = path.length;
    switch (random.below(12)) {
      case 0: {
        // Bit flips anywhere: the decoder decides.
        const bytes = [...encoded];
        for (let f = 1 + random.below(3); f > 0 && bytes.length > 0; f--) bytes[random.below(bytes.length)] ^= 1 << random.below(8);
        add('bit flips', bytes, 'any');
        break;
      }
      case 1:
        add(`field ${path} duplicated`, replaceAt(base, path, (field) => [field, field]), 'any');
        break;
      case 2: {
        // A known field under a wire type the schema does not give it: refused (docs/server.md).
        const field = resolve(base, path);
        const wireType = wireTypeOf(field);
        if ('raw' in field || wireType === undefined) break;
        const other = random.pick([0, 1, 2, 3, 5].filter((w) => w !== wireType));
        add(`field ${path} as wire type ${other}`, replaceAt(base, path, () => [{ raw: asWireType(field.n, other, random) }]), 'invalid');
        break;
      }
      case 3: {
        const field = resolve(base, path);
        if (!('varint' in field)) break;
        // The same value as a valid 10-byte varint: prost and protobufjs read it unchanged.
        add(`field ${path} padded to 10 bytes`, replaceAt(base, path, () => [{ ...field, pad: 10 }]), 'same');
        add(`field ${path} as an 11-byte varint`, replaceAt(base, path, () => [{ ...field, pad: 11 }]), 'invalid');
        // A tenth byte carrying bits above 63: no int64 has them (prost refuses the varint).
        const wide = varint(field.varint, 10);
        wide[9] |= 2 << random.below(6);
        add(`field ${path} with bits above 63`, replaceAt(base, path, () => [{ raw: [...tag(field.n, 0), ...wide] }]), 'invalid');
        const version = random.pick([-1n, 0n, 1n, INT64_MAX, INT64_MIN, INT64_MIN + 1n, 2n ** 32n, -(2n ** 32n), BigInt(random.below(2 ** 30))]);
        add(`field ${path} = ${version}`, replaceAt(base, path, () => [{ n: field.n, varint: version }]), 'any');
        break;
      }
      case 4: {
        const field = resolve(base, path);
        if ('raw' in field || 'varint' in field) break;
        const payload = 'msg' in field ? encode(field.msg) : field.bytes;
        const length = random.pick([2n ** 32n - 1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 63n, 2n ** 64n - 1n, BigInt(payload.length + 1 + encoded.length)]);
        const raw = [...tag(field.n, 2), ...varint(length), ...payload];
        add(`field ${path} with length ${length}`, replaceAt(base, path, () => [{ raw }]), 'invalid');
        break;
      }
      case 5: {
        // Garbage where a KeyValue (or any length-delimited field) was.
        const field = resolve(base, path);
        if (!('msg' in field) && !('bytes' in field)) break;
        add(`field ${path} filled with garbage`, replaceAt(base, path, () => [{ n: field.n, bytes: random.bytes(1 + random.below(24)) }]), 'any');
        break;
      }
      case 6:
      case 7: {
        const unknown = random.pick(unknownFields(random));
        add(`${unknown.what} before field ${path} (depth ${depth})`, replaceAt(base, path, (field) => [{ raw: unknown.raw }, field]), 'same');
        break;
      }
      case 8: {
        const invalid = random.pick(invalidFields(random));
        // Placed last in its message, so no valid length can swallow it.
        add(`${invalid.what} after field ${path} (depth ${depth})`, appendAfterLast(base, path, invalid.raw), 'invalid');
        break;
      }
      case 9: {
        // A message cut inside a field: the decoder must notice.
        const field = resolve(base, path);
        const bytes = encodeField(field);
        if (bytes.length < 2) break;
        const cut = 1 + random.below(bytes.length - 1);
        // Enclosing lengths are recomputed, so a field cut last in its message is cut at its end;
        // anywhere else, what follows may complete it.
        const last = path[depth - 1] === (depth === 1 ? base : (resolve(base, path.slice(0, -1)) as { msg: Field[] }).msg).length - 1;
        add(`field ${path} cut after ${cut} bytes`, replaceAt(base, path, () => [{ raw: bytes.slice(0, cut) }]), last ? 'invalid' : 'any');
        break;
      }
      case 10:
        add('random bytes appended', [...encoded, ...random.bytes(1 + random.below(16))], 'any');
        break;
      default: {
        const bytes = [...encoded];
        bytes.splice(random.below(bytes.length + 1), 0, ...random.bytes(1 + random.below(4)));
        add('random bytes inserted', bytes, 'any');
      }
    }
  }
  return out;
}

function resolve(fields: readonly Field[], path: readonly number[]): Field {
  const field = fields[path[0]];
  return path.length === 1 ? field : resolve((field as { msg: Field[] }).msg, path.slice(1));
}

/** `raw` appended as the last field of the message holding `path`. */
function appendAfterLast(fields: readonly Field[], path: readonly number[], raw: number[]): Field[] {
  if (path.length === 1) return [...fields, { raw }];
  return replaceAt(fields, path.slice(0, 1), (field) => [{ ...field, msg: appendAfterLast((field as { msg: Field[] }).msg, path.slice(1), raw) } as Field]);
}

// ---------------------------------------------------------------------------------------
// The requests mutated. Their own answers do not depend on what the fuzz wrote before them.

const STORE = 'fuzz';

interface Base {
  op: VssOperation;
  fields: Field[];
  status: number;
}

const BASES: readonly Base[] = [
  { op: 'getObject', fields: [str(1, STORE), str(2, 'present')], status: 200 },
  { op: 'getObject', fields: [str(1, STORE), str(2, 'absent')], status: 404 },
  { op: 'getObject', fields: [str(1, STORE), str(2, 'global_version')], status: 200 },
  // An unconditional put leaves the key at version 1: the listing stays the same.
  { op: 'putObjects', fields: [str(1, STORE), { n: 3, msg: kv('present', -1n, 'value') }], status: 200 },
  {
    op: 'putObjects',
    fields: [str(1, STORE), int(2, 12345n), { n: 3, msg: kv('n1', 0n, 'v1') }, { n: 3, msg: kv('n2', 5n, 'v2') }, { n: 4, msg: kv('d1', 1n) }],
    status: 409,
  },
  { op: 'putObjects', fields: [str(1, STORE), { n: 4, msg: kv('never', -1n) }], status: 409 },
  { op: 'deleteObject', fields: [str(1, STORE), { n: 2, msg: kv('never', -1n) }], status: 200 },
  { op: 'deleteObject', fields: [str(1, STORE), { n: 2, msg: kv('present', 99n) }], status: 200 },
  { op: 'deleteObject', fields: [str(1, STORE)], status: 400 },
  { op: 'listKeyVersions', fields: [str(1, STORE)], status: 200 },
  { op: 'listKeyVersions', fields: [str(1, STORE), str(2, 'p'), int(3, 1n), str(4, '1')], status: 200 },
  { op: 'listKeyVersions', fields: [str(1, STORE), str(4, 'not a token')], status: 400 },
];

// ---------------------------------------------------------------------------------------
// Driving a server.

/** The fuzzed store's keys and versions (no values: an unconditional put rewrites one). */
async function snapshot(server: StartedVssServer): Promise<string> {
  const entries: string[][] = [];
  let pageToken: string | undefined;
  do {
    const body = vss.ListKeyVersionsRequest.encode({ storeId: STORE, ...(pageToken === undefined ? {} : { pageToken }) }).finish();
    const response = await send(`${server.url}/listKeyVersions`, body);
    expect(response.status).toBe(200);
    const list = vss.ListKeyVersionsResponse.decode(response.body);
    if (pageToken === undefined) entries.push(['global_version', int64ToBigInt(list.globalVersion).toString()]);
    entries.push(...list.keyVersions.map((k) => [k.key ?? '', int64ToBigInt(k.version).toString()]));
    pageToken = list.nextPageToken || undefined;
  } while (pageToken !== undefined);
  return JSON.stringify(entries);
}

/** Far longer than any answer takes; only a hung request reaches it. */
const HANG_MS = 15_000;

class Fuzzer {
  readonly seen = new Map<number, number>();
  private state = '';

  constructor(private readonly server: StartedVssServer) {}

  async seed(): Promise<void> {
    const put = vss.PutObjectRequest.encode({ storeId: STORE, transactionItems: [keyValue('present', -1n, text('value')), keyValue('p1', -1n), keyValue('p2', -1n)] }).finish();
    expect((await send(`${this.server.url}/putObjects`, put)).status).toBe(200);
    this.state = await snapshot(this.server);
  }

  /** Sends one body and checks the answer; returns it. */
  async run(op: VssOperation, body: Uint8Array, what: string): Promise<RawResponse> {
    const label = `${op} ${what}: body ${hex(body)}`;
    // A watchdog, not a timing assertion: a hang must fail naming its body, not time out the file.
    let watchdog: NodeJS.Timeout | undefined;
    const hang = new Promise<never>((_, reject) => {
      watchdog = setTimeout(() => reject(new Error(`no answer within ${HANG_MS} ms: ${label}`)), HANG_MS);
    });
    const response = await Promise.race([send(`${this.server.url}/${op}`, body), hang]).finally(() => clearTimeout(watchdog));
    this.seen.set(response.status, (this.seen.get(response.status) ?? 0) + 1);
    expect(ALLOWED[op], `${label} → ${response.status} ${response.body.toString('hex')}`).toContain(response.status);
    if (response.status === 200) checkSuccessBody(op, response, label);
    else expect(errorOf(response).code, label).toBe(STATUS_CODE[response.status]);
    if (op === 'putObjects') this.checkItemCount(body, label);
    if (WRITES.includes(op)) {
      // A refused write (400, or a 409 rolled back) leaves the fuzzed store exactly as it was.
      const after = await snapshot(this.server);
      if (response.status !== 200) expect(after, `${label} → ${response.status} changed the store`).toBe(this.state);
      this.state = after;
    }
    return response;
  }

  /** countTopLevelFields must agree with the decoder on every body it decodes. */
  private checkItemCount(body: Uint8Array, label: string): void {
    let items: number | undefined;
    try {
      const request = vss.PutObjectRequest.decode(body);
      items = request.transactionItems.length + request.deleteItems.length;
    } catch {
      return;
    }
    expect(countTopLevelFields(body, [3, 4], MAX_PUT_ITEM_COUNT), label).toBe(items);
  }

  async expectServing(): Promise<void> {
    const health = await send(this.server.url.replace(/\/vss$/, '/health'), undefined, { method: 'GET' });
    expect(health.status).toBe(200);
    const get = await send(`${this.server.url}/getObject`, vss.GetObjectRequest.encode({ storeId: 'alive', key: 'global_version' }).finish());
    expect(get.status).toBe(200);
  }

  async randomBodies(seed: number, perOp: number): Promise<void> {
    const random = prng(seed);
    for (const op of OPS) {
      for (let i = 0; i < perOp; i++) await this.run(op, Uint8Array.from(random.bytes(random.below(80))), `random #${i} (seed ${seed})`);
      await this.expectServing();
    }
  }

  /** Valid requests of random shape: odd characters, the int64 extremes, every optional field. */
  async randomRequests(seed: number, perOp: number): Promise<void> {
    const random = prng(seed);
    const alphabet = ['a', 'Z', '0', ' ', '%', '_', '\\', "'", '"', '/', 'é', 'ß', '€', '😀', '\u{10FFFF}', '\uFFFF', '\uFEFF', '\t'];
    const string = (max: number) => Array.from({ length: random.below(max + 1) }, () => random.pick(alphabet)).join('');
    // Weighted to -1 and 0, so that multi-item puts also succeed, not only conflict.
    const version = () => (random.below(10) < 8 ? random.pick([-1n, 0n]) : random.pick([1n, 2n, INT64_MAX, INT64_MIN, -2n, 2n ** 53n + 1n]));
    // Few stores and short keys, so puts, reads and deletes meet; mostly the store whose listing
    // is checked after every refused write (a 409 must roll a whole multi-item put back).
    const storeId = () => random.pick([STORE, STORE, STORE, '', 'r%', string(4)]);
    const key = () => (random.below(4) ? string(3) : random.pick(['present', 'p1']));
    const items = () => Array.from({ length: random.below(4) }, () => keyValue(key(), version(), text(string(5))));
    const requests: Record<VssOperation, () => Record<string, unknown>> = {
      getObject: () => ({ storeId: storeId(), key: key() }),
      putObjects: () => ({
        storeId: storeId(),
        transactionItems: items(),
        deleteItems: random.below(3) ? [] : items(),
        ...(random.below(4) ? {} : { globalVersion: bigIntToInt64(version()) }),
      }),
      deleteObject: () => ({ storeId: storeId(), ...(random.below(8) ? { keyValue: keyValue(key(), version()) } : {}) }),
      listKeyVersions: () => ({
        storeId: storeId(),
        ...(random.below(2) ? { keyPrefix: string(2) } : {}),
        ...(random.below(2) ? { pageSize: random.pick([0, 1, 2, 100, 101, 2 ** 31 - 1, -1]) } : {}),
        ...(random.below(3) ? {} : { pageToken: random.pick(['0', '1', '3', '-0', '+2', '007', INT64_MAX.toString(), '', 'x']) }),
      }),
    };
    for (const op of OPS) {
      for (let i = 0; i < perOp; i++) await this.run(op, ENCODERS[op](requests[op]()), `valid random #${i} (seed ${seed})`);
      await this.expectServing();
    }
    // Back to the keys the mutated requests expect.
    await this.seed();
  }

  async mutatedBodies(seed: number, perBase: number): Promise<void> {
    const random = prng(seed);
    for (const [index, base] of BASES.entries()) {
      const original = Uint8Array.from(encode(base.fields));
      for (const mutant of mutants(base.fields, random, perBase)) {
        const what = `base ${index}, ${mutant.what} (seed ${seed})`;
        if (mutant.expect === 'same') {
          const reference = await this.run(base.op, original, `base ${index}`);
          expect(reference.status, `base ${index} answers as documented`).toBe(base.status);
          const response = await this.run(base.op, mutant.body, what);
          expect(response.status, `${base.op} ${what}: body ${hex(mutant.body)}`).toBe(reference.status);
          if (base.op === 'getObject' || base.op === 'listKeyVersions') expect(hex(response.body), what).toBe(hex(reference.body));
        } else {
          const response = await this.run(base.op, mutant.body, what);
          if (mutant.expect === 'invalid') expect(response.status, `${base.op} ${what}: body ${hex(mutant.body)}`).toBe(400);
        }
      }
      await this.expectServing();
    }
  }

  /** Every prefix of a few requests: valid exactly when the cut falls between top-level fields. */
  async truncations(): Promise<void> {
    for (const index of [0, 4, 7, 10]) {
      const base = BASES[index];
      const boundaries = new Set<number>([0]);
      let offset = 0;
      for (const field of base.fields) boundaries.add((offset += encodeField(field).length));
      const body = Uint8Array.from(encode(base.fields));
      for (let length = 0; length < body.length; length++) {
        const response = await this.run(base.op, body.subarray(0, length), `base ${index} cut to ${length} bytes`);
        if (!boundaries.has(length)) expect(response.status, `${base.op} base ${index} cut to ${length}: ${hex(body.subarray(0, length))}`).toBe(400);
      }
      await this.expectServing();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Edge requests that are valid protobuf: exact answers.

interface EdgeCase {
  op: VssOperation;
  request: Record<string, unknown>;
  status: number;
  what: string;
}

const KEY_MAX = 'k'.repeat(MAX_KEY_LENGTH);
const STORE_MAX = 's'.repeat(MAX_STORE_ID_LENGTH);
function edgeCases(): EdgeCase[] {
  const put = (storeId: string, items: Array<[string, bigint]>, extra: Record<string, unknown> = {}) => ({
    storeId,
    transactionItems: items.map(([key, version]) => keyValue(key, version, text('x'))),
    ...extra,
  });
  const cases: EdgeCase[] = [
    { what: 'empty get', op: 'getObject', request: {}, status: 404 },
    { what: 'empty put', op: 'putObjects', request: {}, status: 200 },
    { what: 'empty list', op: 'listKeyVersions', request: {}, status: 200 },
    { what: 'empty delete', op: 'deleteObject', request: {}, status: 400 },
    { what: 'delete of an empty KeyValue', op: 'deleteObject', request: { keyValue: {} }, status: 200 },
    { what: 'empty key created', op: 'putObjects', request: put('', [['', 0n]]), status: 200 },
    { what: 'empty key read', op: 'getObject', request: { storeId: '', key: '' }, status: 200 },
    { what: 'empty key deleted', op: 'deleteObject', request: { storeId: '', keyValue: keyValue('', -1n) }, status: 200 },
    { what: 'empty key gone', op: 'getObject', request: { storeId: '', key: '' }, status: 404 },
    { what: 'max key and store id', op: 'putObjects', request: put(STORE_MAX, [[KEY_MAX, -1n]]), status: 200 },
    { what: 'max key read', op: 'getObject', request: { storeId: STORE_MAX, key: KEY_MAX }, status: 200 },
    { what: 'max key listed by its full prefix', op: 'listKeyVersions', request: { storeId: STORE_MAX, keyPrefix: KEY_MAX }, status: 200 },
    { what: 'max key updated', op: 'putObjects', request: put(STORE_MAX, [[KEY_MAX, 1n]]), status: 200 },
    { what: 'max key deleted', op: 'deleteObject', request: { storeId: STORE_MAX, keyValue: keyValue(KEY_MAX, 2n) }, status: 200 },
    { what: 'key one too long (put)', op: 'putObjects', request: put('e', [[`${KEY_MAX}k`, -1n]]), status: 400 },
    { what: 'key one too long (get)', op: 'getObject', request: { storeId: 'e', key: `${KEY_MAX}k` }, status: 400 },
    { what: 'key one too long (delete)', op: 'deleteObject', request: { storeId: 'e', keyValue: keyValue(`${KEY_MAX}k`, -1n) }, status: 400 },
    { what: 'prefix one too long', op: 'listKeyVersions', request: { storeId: 'e', keyPrefix: `${KEY_MAX}k` }, status: 200 },
    { what: 'store id one too long (put)', op: 'putObjects', request: put(`${STORE_MAX}s`, [['k', -1n]]), status: 400 },
    { what: 'store id one too long (list)', op: 'listKeyVersions', request: { storeId: `${STORE_MAX}s` }, status: 400 },
    { what: 'NUL in a key', op: 'putObjects', request: put('e', [['a\0b', -1n]]), status: 400 },
    { what: 'create at version 0', op: 'putObjects', request: put('e', [['k', 0n]]), status: 200 },
    { what: 'create again at version 0', op: 'putObjects', request: put('e', [['k', 0n]]), status: 409 },
    { what: 'update at INT64_MAX', op: 'putObjects', request: put('e', [['k', INT64_MAX]]), status: 409 },
    { what: 'update at INT64_MIN', op: 'putObjects', request: put('e', [['k', INT64_MIN]]), status: 409 },
    { what: 'update at -2', op: 'putObjects', request: put('e', [['k', -2n]]), status: 409 },
    { what: 'update at version 1', op: 'putObjects', request: put('e', [['k', 1n]]), status: 200 },
    { what: 'create at INT64_MAX', op: 'putObjects', request: put('e', [['new', INT64_MAX]]), status: 409 },
    { what: 'delete item at INT64_MAX', op: 'putObjects', request: put('e', [], { deleteItems: [keyValue('k', INT64_MAX)] }), status: 409 },
    { what: 'delete item at INT64_MIN', op: 'putObjects', request: put('e', [], { deleteItems: [keyValue('k', INT64_MIN)] }), status: 409 },
    { what: 'DeleteObject at INT64_MAX (nothing deleted)', op: 'deleteObject', request: { storeId: 'e', keyValue: keyValue('k', INT64_MAX) }, status: 200 },
    { what: 'DeleteObject at INT64_MIN (nothing deleted)', op: 'deleteObject', request: { storeId: 'e', keyValue: keyValue('k', INT64_MIN) }, status: 200 },
    { what: 'k still at version 2', op: 'putObjects', request: put('e', [['k', 2n]]), status: 200 },
    { what: 'global version INT64_MAX', op: 'putObjects', request: put('e', [], { globalVersion: bigIntToInt64(INT64_MAX) }), status: 409 },
    { what: 'global version INT64_MIN', op: 'putObjects', request: put('e', [], { globalVersion: bigIntToInt64(INT64_MIN) }), status: 409 },
    { what: 'global version 0', op: 'putObjects', request: put('e', [], { globalVersion: bigIntToInt64(0n) }), status: 200 },
    { what: 'global version 1', op: 'putObjects', request: put('e', [], { globalVersion: bigIntToInt64(1n) }), status: 200 },
    { what: 'global version -1 (reset to 1)', op: 'putObjects', request: put('e', [], { globalVersion: bigIntToInt64(-1n) }), status: 200 },
    { what: 'global version back at 1', op: 'putObjects', request: put('e', [], { globalVersion: bigIntToInt64(1n) }), status: 200 },
    { what: 'page size INT32_MAX', op: 'listKeyVersions', request: { storeId: 'e', pageSize: 2 ** 31 - 1 }, status: 200 },
    { what: 'page size INT32_MIN', op: 'listKeyVersions', request: { storeId: 'e', pageSize: -(2 ** 31) }, status: 400 },
    { what: 'page size -1', op: 'listKeyVersions', request: { storeId: 'e', pageSize: -1 }, status: 400 },
    { what: 'page size 0', op: 'listKeyVersions', request: { storeId: 'e', pageSize: 0 }, status: 200 },
    { what: 'page token INT64_MAX', op: 'listKeyVersions', request: { storeId: 'e', pageToken: INT64_MAX.toString() }, status: 200 },
    { what: 'page token INT64_MAX + 1', op: 'listKeyVersions', request: { storeId: 'e', pageToken: (INT64_MAX + 1n).toString() }, status: 400 },
    { what: 'page token -1', op: 'listKeyVersions', request: { storeId: 'e', pageToken: '-1' }, status: 400 },
    { what: 'page token 0', op: 'listKeyVersions', request: { storeId: 'e', pageToken: '0' }, status: 200 },
    { what: 'empty page token', op: 'listKeyVersions', request: { storeId: 'e', pageToken: '' }, status: 400 },
    { what: 'empty key prefix', op: 'listKeyVersions', request: { storeId: 'e', keyPrefix: '' }, status: 200 },
  ];
  // PostgreSQL limits a key, its store id and the user token to one index entry (docs/server.md):
  // 2,400 bytes of key still fit with a one-character store id.
  const wide = '😀'.repeat(MAX_KEY_LENGTH);
  cases.push(
    { what: 'max key of 4-byte characters', op: 'putObjects', request: put('w', [[wide, 0n]]), status: 200 },
    { what: 'max key of 4-byte characters read', op: 'getObject', request: { storeId: 'w', key: wide }, status: 200 },
    { what: 'key of 601 4-byte characters', op: 'getObject', request: { storeId: 'w', key: `${wide}😀` }, status: 400 },
  );
  return cases;
}

const ENCODERS: Record<VssOperation, (request: Record<string, unknown>) => Uint8Array> = {
  getObject: (r) => vss.GetObjectRequest.encode(r).finish(),
  putObjects: (r) => vss.PutObjectRequest.encode(r).finish(),
  deleteObject: (r) => vss.DeleteObjectRequest.encode(r).finish(),
  listKeyVersions: (r) => vss.ListKeyVersionsRequest.encode(r).finish(),
};

async function runEdgeCases(fuzzer: Fuzzer): Promise<void> {
  for (const edge of edgeCases()) {
    const body = ENCODERS[edge.op](edge.request);
    const response = await fuzzer.run(edge.op, body, edge.what);
    expect(response.status, `${edge.op} ${edge.what}: ${response.status === 200 ? '' : errorOf(response).message}`).toBe(edge.status);
  }
  await fuzzer.expectServing();
}

// ---------------------------------------------------------------------------------------

describe.each([
  { backend: 'memory' as const, random: 120, perBase: 90 },
  { backend: 'pglite' as const, random: 25, perBase: 15 },
])('fuzzed request bodies ($backend)', ({ backend, random, perBase }) => {
  let server: StartedVssServer;
  let fuzzer: Fuzzer;
  beforeAll(async () => {
    server = await startVssServer({ backend, auth: { kind: 'noop' } });
    fuzzer = new Fuzzer(server);
    await fuzzer.seed();
  });
  afterAll(async () => {
    await fuzzer.expectServing();
    await server.close();
  });

  it('answers valid edge requests exactly', async () => {
    await runEdgeCases(fuzzer);
  });

  it('answers random bytes with an allowed status and a typed error', async () => {
    await fuzzer.randomBodies(backend === 'memory' ? 0xf00d : 0xbeef, random);
  });

  it('answers random valid requests with an allowed status', async () => {
    await fuzzer.randomRequests(backend === 'memory' ? 0xabcd : 0xdcba, random);
  });

  it('answers mutated requests as their mutation requires, and a refused write changes nothing', async () => {
    await fuzzer.mutatedBodies(backend === 'memory' ? 0x5eed : 0xcafe, perBase);
  });

  it('refuses every truncation that cuts a field', async () => {
    await fuzzer.truncations();
  });

  it('says what is wrong with an undecodable body', async () => {
    const cases: Array<[VssOperation, number[], string]> = [
      ['getObject', [0x0a, 0x02, 0xc3, 0x28], 'a string field is not valid UTF-8'],
      ['putObjects', [0x1a, 0x05, 0x0a, 0x01], 'a field runs past the end of its message: truncated, or a wrong length'],
      ['deleteObject', [0x08, 0x01], 'invalid wire type 0 for field 1'],
      ['listKeyVersions', [...tag(3, 0), ...varint(1n, 11)], 'invalid varint encoding: longer than 10 bytes'],
      ['putObjects', [...tag(2, 0), ...varint(-1n).map((b, i) => (i === 9 ? 0x7f : b))], 'invalid varint encoding: more than 64 bits'],
      ['getObject', [...tag(0, 0), 1], 'illegal tag: field number 0'],
    ];
    for (const [op, bytes, problem] of cases) {
      const response = await fuzzer.run(op, Uint8Array.from(bytes), problem);
      expect(response.status).toBe(400);
      expect(errorOf(response).message).toBe(`Error parsing request: body is not a valid ${op} request (${problem})`);
    }
  });

  it('saw every kind of answer (the corpus is not all refusals)', () => {
    for (const status of [200, 400, 404, 409]) expect(fuzzer.seen.get(status) ?? 0, `answers with status ${status}`).toBeGreaterThan(0);
  });
});
