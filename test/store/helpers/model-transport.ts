/**
 * The world of the store model tests (model-faults.test.ts): a seeded PRNG, a pool of held
 * events (retry sleeps, slow requests, requests that land late) released one at a time in a
 * seeded order, a server backend that logs every mutation it applies, an in-process transport
 * that calls the server's operations without HTTP, and a fetch wrapper that injects faults.
 *
 * With the in-process transport and the memory backend everything runs on microtasks, so a
 * seed replays exactly: the same operations, the same faults, the same interleaving. (Over
 * real loopback HTTP the choices are seeded but the interleaving is not.)
 */
import type { FetchFunction, FetchResponse, Sleep } from '../../../src/client/index.js';
import { decryptStorable, KeyObfuscator } from '../../../src/crypto/index.js';
import { int64ToBigInt, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../../../src/protocol/index.js';
import { MemoryBackend, VssServerError, type DeleteItem, type ListedKey, type ListQuery, type PutRequest, type StorageBackend, type StoredRecord } from '../../../src/server/index.js';
import { decodePutObjects, deleteObject, getObject, listKeyVersions, putObjects } from '../../../src/server/operations.js';
import { StoreLayout } from '../../../src/store/index.js';

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** xorshift32: small, seedable, and the same sequence on every platform. */
export class Rng {
  #state: number;
  constructor(seed: number, salt = 0) {
    // Mix seed and salt so neighbouring seeds (and streams of one seed) do not start alike.
    const s = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(salt + 1, 0x85ebca6b)) >>> 0;
    this.#state = s === 0 ? 0x6d2b79f5 : s;
    for (let i = 0; i < 8; i++) this.next();
  }
  /** A float in [0, 1). */
  next(): number {
    let x = this.#state;
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    this.#state = x;
    return x / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }
  /** Picks a label by weight. */
  weighted<T extends string>(weights: Readonly<Record<T, number>>): T {
    const entries = Object.entries(weights) as Array<[T, number]>;
    let r = this.next() * entries.reduce((sum, [, w]) => sum + w, 0);
    for (const [label, w] of entries) {
      r -= w;
      if (r < 0) return label;
    }
    return entries[entries.length - 1][0];
  }
}

/**
 * Events that wait for the driver: each is released by `releaseOne` in a seeded order, so
 * held requests overtake each other and land after later ones.
 */
export class Pool {
  readonly #held: Array<{ label: string; release: () => void }> = [];
  constructor(private readonly rng: Rng) {}

  hold(label: string): Promise<void> {
    return this.holdHandle(label).released;
  }

  /** Like `hold`, with a way to release this event ahead of the driver. */
  holdHandle(label: string): { released: Promise<void>; releaseNow(): void } {
    let item!: { label: string; release: () => void };
    const released = new Promise<void>((release) => {
      item = { label, release };
      this.#held.push(item);
    });
    return {
      released,
      releaseNow: () => {
        const index = this.#held.indexOf(item);
        if (index === -1) return;
        this.#held.splice(index, 1);
        item.release();
      },
    };
  }

  get size(): number {
    return this.#held.length;
  }

  releaseOne(): string | undefined {
    if (this.#held.length === 0) return undefined;
    const [item] = this.#held.splice(this.rng.int(this.#held.length), 1);
    item.release();
    return item.label;
  }

  /** Whether a driver releases held events; until then (opening the stores) sleeps end at once. */
  driving = false;

  /** A retry sleep that ends when the driver releases it (the delay itself is irrelevant here). */
  readonly sleep: Sleep = () => (this.driving ? this.hold('retry sleep') : Promise.resolve());
}

/** One key in the model: its LDK address and a short name for traces. */
export interface ModelKey {
  name: string;
  primaryNamespace: string;
  secondaryNamespace: string;
  key: string;
}

/** A mutation the server applied, in the server's order. `value` is the decrypted plaintext. */
export interface AppliedMutation {
  /** The driver's logical clock when it applied. */
  at: number;
  /** The writer whose request this was (in-process transport only). */
  writer: number | undefined;
  key: string;
  kind: 'put' | 'delete';
  value: string | null;
  version: bigint;
}

/** Maps store keys to model names and opens stored values (the tests hold the store's keys). */
export class KeyBook {
  readonly #names = new Map<string, string>();
  readonly #dataKey: Uint8Array;
  constructor(keys: readonly ModelKey[], dataKey: Uint8Array, obfuscationMasterKey: Uint8Array) {
    const layout = new StoreLayout(1, new KeyObfuscator(obfuscationMasterKey));
    for (const k of keys) this.#names.set(layout.address(k.primaryNamespace, k.secondaryNamespace, k.key).storeKey, k.name);
    this.#names.set(layout.schemaMarker().storeKey, 'marker');
    this.#dataKey = dataKey;
  }
  name(storeKey: string): string {
    return this.#names.get(storeKey) ?? `?${storeKey.slice(0, 8)}`;
  }
  plaintext(storeKey: string, value: Uint8Array): string {
    try {
      return fromUtf8.decode(decryptStorable(value, this.#dataKey, utf8.encode(storeKey)).value);
    } catch {
      return '<undecryptable>';
    }
  }
}

/** A MemoryBackend that logs every mutation it applies (for the two-writer overwrite check). */
export class LoggingBackend implements StorageBackend {
  readonly kind = 'memory';
  readonly inner = new MemoryBackend();
  readonly applied: AppliedMutation[] = [];
  constructor(
    private readonly book: KeyBook,
    private readonly clock: () => number,
    private readonly trace: (line: string) => void,
    /** Who sent the request being applied, if the transport knows. */
    private readonly writer: () => number | undefined = () => undefined,
  ) {}

  get(userToken: string, storeId: string, key: string): Promise<StoredRecord | undefined> {
    return this.inner.get(userToken, storeId, key);
  }

  async put(userToken: string, request: PutRequest): Promise<void> {
    await this.inner.put(userToken, request);
    // Logged synchronously after the put: concurrent requests must not interleave here.
    const at = this.clock();
    const writer = this.writer();
    for (const item of request.transactionItems) {
      const mutation: AppliedMutation = {
        at,
        writer,
        key: this.book.name(item.key),
        kind: 'put',
        value: this.book.plaintext(item.key, item.value),
        // The memory backend's rule: a create or unconditional put starts at 1, a compare-and-set adds 1.
        version: item.version <= 0n ? 1n : item.version + 1n,
      };
      this.applied.push(mutation);
      this.trace(`  server applied put ${mutation.key} = ${mutation.value} @v${mutation.version}`);
    }
    for (const item of request.deleteItems) {
      const mutation: AppliedMutation = { at, writer, key: this.book.name(item.key), kind: 'delete', value: null, version: item.version };
      this.applied.push(mutation);
      this.trace(`  server applied delete ${mutation.key} (was v${item.version})`);
    }
  }

  delete(userToken: string, storeId: string, item: DeleteItem): Promise<void> {
    return this.inner.delete(userToken, storeId, item);
  }

  list(userToken: string, query: ListQuery): Promise<ListedKey[]> {
    return this.inner.list(userToken, query);
  }

  checkHealth(): Promise<void> {
    return this.inner.checkHealth();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A reply as the client reads it (no stream: the body is read whole). */
function reply(status: number, body: Uint8Array, withProtocolHeader = true): FetchResponse {
  const headers = new Map<string, string>([['content-type', 'application/octet-stream']]);
  if (withProtocolHeader) headers.set(PROTOCOL_VERSION_HEADER, PROTOCOL_VERSION);
  return {
    status,
    headers: { get: (name: string) => headers.get(name.toLowerCase()) ?? null },
    // A copy: protobufjs may hand out a view into a shared pool, whose .buffer is the whole pool.
    arrayBuffer: async () => Uint8Array.from(body).buffer,
    body: null,
  };
}

function errorReply(status: number, code: vss.ErrorCode, message: string, withProtocolHeader = true): FetchResponse {
  return reply(status, vss.ErrorResponse.encode({ errorCode: code, message }).finish(), withProtocolHeader);
}

async function bodyBytes(init: RequestInit): Promise<Uint8Array> {
  const body = init.body;
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('model transport: unexpected request body type');
}

/**
 * The server's four operations called in-process (no HTTP, no timers): each reply is what the
 * HTTP layer would send, an ErrorResponse with the typed error's status included.
 */
export function directFetch(backend: StorageBackend): FetchFunction {
  const userToken = 'model-test';
  return async (url, init) => {
    const operation = url.slice(url.lastIndexOf('/') + 1);
    const body = await bodyBytes(init);
    try {
      let response: Uint8Array;
      switch (operation) {
        case 'getObject':
          response = vss.GetObjectResponse.encode(await getObject(backend, userToken, vss.GetObjectRequest.decode(body))).finish();
          break;
        case 'putObjects':
          response = vss.PutObjectResponse.encode(await putObjects(backend, userToken, decodePutObjects(body))).finish();
          break;
        case 'deleteObject':
          response = vss.DeleteObjectResponse.encode(await deleteObject(backend, userToken, vss.DeleteObjectRequest.decode(body))).finish();
          break;
        case 'listKeyVersions':
          response = vss.ListKeyVersionsResponse.encode(await listKeyVersions(backend, userToken, vss.ListKeyVersionsRequest.decode(body))).finish();
          break;
        default:
          return errorReply(404, vss.ErrorCode.INVALID_REQUEST_EXCEPTION, `no operation ${operation}`);
      }
      return reply(200, response);
    } catch (error) {
      if (error instanceof VssServerError) return errorReply(error.httpStatus, error.errorCode, error.message);
      return errorReply(500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'Unknown Server Error occurred.');
    }
  };
}

/** What the transport does to one request. */
export type FaultKind =
  /** Delivered normally. */
  | 'pass'
  /** Fails before anything is sent (connection refused). */
  | 'fail-unsent'
  /** The server applies the request; the reply is lost (connection reset). */
  | 'drop-reply'
  /** A 503 from the server before it did anything. */
  | '5xx-unsent'
  /** The server applied the request, then a 500 came back (e.g. a proxy timed out). */
  | '5xx-applied'
  /** A proxy's 502 without the protocol header, nothing applied. */
  | '502-proxy'
  /** The client sees a broken connection at once; the request reaches the server later. */
  | 'late'
  /** Held, then delivered and answered: overtaken by later requests. */
  | 'slow';

/**
 * How late a 'late' request may land, counted in the same writer's later requests that touch
 * one of its keys: with 2, it may land after the next such request but before the one after
 * (the window the store's late-attempt logic covers); with 1, before the next one. Undefined
 * means any time, even after later operations on the key were acknowledged.
 */
export interface LateBudget {
  write: number;
  remove: number;
}

export interface FaultSettings {
  /** Chance that a request meets a fault. */
  rate: number;
  late?: LateBudget;
  /** Chance that a request without a fault is slow (held, so others overtake it). */
  slowRate: number;
  weights: Readonly<Record<Exclude<FaultKind, 'pass'>, number>>;
}

export const DEFAULT_FAULT_WEIGHTS: FaultSettings['weights'] = {
  'fail-unsent': 1,
  'drop-reply': 2,
  '5xx-unsent': 1,
  '5xx-applied': 1,
  '502-proxy': 0.5,
  late: 2,
  slow: 0,
};

/** The store keys a request touches, and whether it deletes any. */
function touchedKeys(operation: string, body: Uint8Array): { keys: string[]; deletes: boolean } {
  try {
    if (operation === 'getObject') return { keys: [vss.GetObjectRequest.decode(body).key], deletes: false };
    if (operation === 'putObjects') {
      const request = vss.PutObjectRequest.decode(body);
      return {
        keys: [...request.transactionItems, ...request.deleteItems].map((i) => i.key ?? ''),
        deletes: request.deleteItems.length > 0,
      };
    }
  } catch {
    // Not decodable: touches nothing we track.
  }
  return { keys: [], deletes: false };
}

/** Describes a request for traces: operation and the model names of its keys. */
function describeRequest(operation: string, body: Uint8Array, book: KeyBook): string {
  try {
    switch (operation) {
      case 'getObject':
        return `get ${book.name(vss.GetObjectRequest.decode(body).key)}`;
      case 'putObjects': {
        const request = vss.PutObjectRequest.decode(body);
        const puts = request.transactionItems.map((i) => `${book.name(i.key ?? '')}@${int64ToBigInt(i.version)}=${book.plaintext(i.key ?? '', i.value ?? new Uint8Array())}`);
        const deletes = request.deleteItems.map((i) => `del ${book.name(i.key ?? '')}@${int64ToBigInt(i.version)}`);
        return `put [${[...puts, ...deletes].join(', ')}]`;
      }
      case 'listKeyVersions':
        return 'list';
      default:
        return operation;
    }
  } catch {
    return operation;
  }
}

/**
 * Wraps a transport with seeded faults. Requests that land late are delivered when the pool
 * releases them; `inFlight` holds their delivery (and anything else still running) so the
 * driver can wait for every request to have reached the server before checking it.
 */
export class FaultyTransport {
  enabled = true;
  readonly inFlight = new Set<Promise<unknown>>();
  #sequence = 0;
  /** Late requests not landed yet, with how many more requests on their keys they may wait. */
  readonly #late: Array<{ keys: Set<string>; budget: number; land(): Promise<void> }> = [];
  constructor(
    private readonly name: string,
    private readonly inner: FetchFunction,
    private readonly rng: Rng,
    private readonly pool: Pool,
    private readonly settings: FaultSettings,
    private readonly book: KeyBook,
    private readonly trace: (line: string) => void,
  ) {}

  readonly fetch: FetchFunction = async (url, init) => {
    const operation = url.slice(url.lastIndexOf('/') + 1);
    const body = await bodyBytes(init);
    const touched = touchedKeys(operation, body);
    await this.#landDue(touched.keys);
    let fault: FaultKind = 'pass';
    if (this.enabled && this.rng.chance(this.settings.rate)) fault = this.rng.weighted(this.settings.weights);
    else if (this.enabled && this.rng.chance(this.settings.slowRate)) fault = 'slow';
    const label = `${this.name}#${++this.#sequence} ${describeRequest(operation, body, this.book)}`;
    this.trace(`  req ${label}: ${fault}`);
    // A request the client gave up on still runs to the end on the server: never pass the signal on.
    const { signal: _signal, ...unsignalled } = init;
    const deliver = async (): Promise<FetchResponse> => this.inner(url, unsignalled);
    const consume = async (response: FetchResponse) => {
      await response.arrayBuffer();
    };
    switch (fault) {
      case 'pass':
        return this.inner(url, init);
      case 'fail-unsent':
        throw new TypeError('fetch failed (injected: connection refused, nothing sent)');
      case 'drop-reply':
        await consume(await deliver());
        throw new TypeError('fetch failed (injected: socket hang up after the server answered)');
      case '5xx-unsent':
        return errorReply(503, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'injected: unavailable');
      case '5xx-applied':
        await consume(await deliver());
        return errorReply(500, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'injected: failed after applying');
      case '502-proxy':
        return errorReply(502, vss.ErrorCode.INTERNAL_SERVER_EXCEPTION, 'injected: bad gateway', false);
      case 'late': {
        const held = this.pool.holdHandle(`late ${label}`);
        const landing = held.released.then(async () => {
          this.trace(`  late request lands: ${label}`);
          await consume(await deliver());
        });
        const tracked = landing.catch(() => undefined).finally(() => this.inFlight.delete(tracked));
        this.inFlight.add(tracked);
        const budget = this.settings.late ? (touched.deletes ? this.settings.late.remove : this.settings.late.write) : Infinity;
        const entry = {
          keys: new Set(touched.keys),
          budget,
          land: async () => {
            held.releaseNow();
            await tracked;
          },
        };
        this.#late.push(entry);
        void tracked.then(() => {
          const index = this.#late.indexOf(entry);
          if (index !== -1) this.#late.splice(index, 1);
        });
        throw new TypeError('fetch failed (injected: connection broke; the request will still land)');
      }
      case 'slow':
        await this.pool.hold(`slow ${label}`);
        this.trace(`  slow request delivered: ${label}`);
        return this.inner(url, init);
    }
  };

  /** Lands the late requests whose budget this request (touching `keys`) uses up. */
  async #landDue(keys: readonly string[]): Promise<void> {
    const due = this.#late.filter((late) => keys.some((k) => late.keys.has(k)) && --late.budget <= 0);
    for (const late of due) await late.land();
  }
}
