/**
 * In-memory implementations of the store contract (AsyncKVStore / SyncKVStore) for LDK-layer
 * unit tests: a shared "server" with per-key versions, and clients that write conditionally
 * like VssStore does (so a second client writing behind the first one's back is detected).
 * Fault switches simulate an outage, latency and one-off failures.
 */
import type { AsyncKVStore, StoreKey, SyncKVStore } from '../../../src/store/types.js';
import { ConcurrentWriterError, InvalidKeyError, KeyNotFoundError } from '../../../src/store/errors.js';

const SEP = '\u0000';
const keyOf = (p: string, s: string, k: string): string => [p, s, k].join(SEP);
const parse = (composite: string): StoreKey => {
  const [primaryNamespace, secondaryNamespace, key] = composite.split(SEP);
  return { primaryNamespace, secondaryNamespace, key };
};

/** An error shaped like a refused TCP connection (transient). */
export function connectionRefused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1 (simulated outage)'), { code: 'ECONNREFUSED' });
}

export interface CommittedOp {
  seq: number;
  op: 'write' | 'remove';
  key: StoreKey;
  bytes: number;
}

export class MemoryServer {
  readonly values = new Map<string, { value: Uint8Array; version: number }>();
  readonly log: CommittedOp[] = [];
  private seq = 0;
  /** While true every request fails like an unreachable server. */
  outage = false;

  commitWrite(k: string, value: Uint8Array, expectedVersion: number | undefined): number {
    const current = this.values.get(k);
    if (expectedVersion !== undefined && (current?.version ?? 0) !== expectedVersion) {
      throw new ConcurrentWriterError(`version conflict at ${k.split(SEP).join('/')}: expected ${expectedVersion}, server has ${current?.version ?? 0}`);
    }
    const version = (current?.version ?? 0) + 1;
    this.values.set(k, { value: Uint8Array.from(value), version });
    this.log.push({ seq: ++this.seq, op: 'write', key: parse(k), bytes: value.length });
    return version;
  }

  commitRemove(k: string): void {
    if (this.values.delete(k)) this.log.push({ seq: ++this.seq, op: 'remove', key: parse(k), bytes: 0 });
  }

  has(p: string, s: string, k: string): boolean {
    return this.values.has(keyOf(p, s, k));
  }

  get(p: string, s: string, k: string): Uint8Array | undefined {
    return this.values.get(keyOf(p, s, k))?.value;
  }

  keys(): StoreKey[] {
    return [...this.values.keys()].map(parse);
  }

  /** A copy of the stored values as they are now (for a store "as it was" at some moment). */
  clone(): MemoryServer {
    const copy = new MemoryServer();
    for (const [k, v] of this.values) copy.values.set(k, { value: v.value, version: v.version });
    return copy;
  }

  bytesWritten(): number {
    return this.log.reduce((n, op) => n + op.bytes, 0);
  }
}

export interface MemoryStoreOptions {
  /** Delay of every operation, ms. */
  latencyMs?: number;
  /** Write with compare-and-set against the versions this client saw (VssStore's default). */
  conditional?: boolean;
}

function validate(p: string, s: string, k?: string): void {
  const ok = (x: string): boolean => x.length <= 120 && /^[A-Za-z0-9_-]*$/.test(x);
  if (!ok(p) || !ok(s) || (k !== undefined && (!ok(k) || k.length === 0)) || (p === '' && s !== '')) {
    throw new InvalidKeyError(`invalid namespace/key ${JSON.stringify([p, s, k])}`);
  }
}

/** A client of a MemoryServer with AsyncKVStore semantics. */
export class MemoryKVStore implements AsyncKVStore {
  private readonly versions = new Map<string, number>();
  /** Per-key chains: operations on one key take effect in call order. */
  private readonly chains = new Map<string, Promise<unknown>>();
  private readonly failures: (() => Error)[] = [];
  latencyMs: number;
  readonly conditional: boolean;
  /** Client-side view of outages (in addition to the server's). */
  outage = false;
  /** Observers of each operation's outcome (for ordering assertions). */
  readonly resolvedWrites: { key: StoreKey; at: number }[] = [];

  constructor(
    readonly server: MemoryServer = new MemoryServer(),
    options: MemoryStoreOptions = {},
  ) {
    this.latencyMs = options.latencyMs ?? 0;
    this.conditional = options.conditional ?? true;
    // Like VssStore: learn every key's version at open.
    for (const [k, v] of server.values) this.versions.set(k, v.version);
  }

  /** The next `count` operations fail with `make()`. */
  failNext(count: number, make: () => Error = connectionRefused): void {
    for (let i = 0; i < count; i++) this.failures.push(make);
  }

  private async gate(): Promise<void> {
    if (this.latencyMs > 0) await new Promise((r) => setTimeout(r, this.latencyMs));
    else await Promise.resolve();
    const failure = this.failures.shift();
    if (failure) throw failure();
    if (this.outage || this.server.outage) throw connectionRefused();
  }

  private ordered<T>(k: string, op: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(k) ?? Promise.resolve();
    const next = prev.then(op, op);
    const settled = next.catch(() => undefined);
    this.chains.set(k, settled);
    void settled.then(() => {
      if (this.chains.get(k) === settled) this.chains.delete(k);
    });
    return next;
  }

  async read(p: string, s: string, k: string): Promise<Uint8Array> {
    validate(p, s, k);
    await this.gate();
    const entry = this.server.values.get(keyOf(p, s, k));
    if (!entry) throw new KeyNotFoundError(p, s, k);
    this.versions.set(keyOf(p, s, k), entry.version);
    return Uint8Array.from(entry.value);
  }

  write(p: string, s: string, k: string, value: Uint8Array): Promise<void> {
    validate(p, s, k);
    const composite = keyOf(p, s, k);
    const copy = Uint8Array.from(value);
    return this.ordered(composite, async () => {
      await this.gate();
      const version = this.server.commitWrite(composite, copy, this.conditional ? (this.versions.get(composite) ?? 0) : undefined);
      this.versions.set(composite, version);
      this.resolvedWrites.push({ key: parse(composite), at: performance.now() });
    });
  }

  remove(p: string, s: string, k: string, _lazy: boolean): Promise<void> {
    validate(p, s, k);
    const composite = keyOf(p, s, k);
    return this.ordered(composite, async () => {
      await this.gate();
      this.server.commitRemove(composite);
      this.versions.delete(composite);
    });
  }

  async list(p: string, s: string): Promise<string[]> {
    validate(p, s);
    await this.gate();
    const out: string[] = [];
    for (const composite of this.server.values.keys()) {
      const key = parse(composite);
      if (key.primaryNamespace === p && key.secondaryNamespace === s) out.push(key.key);
    }
    return out;
  }

  async listAll(): Promise<StoreKey[]> {
    await this.gate();
    return this.server.keys();
  }

  /** A blocking view over the same server (no latency; outages and failures apply). */
  toSyncStore(): SyncKVStore {
    const server = this.server;
    const check = (): void => {
      const failure = this.failures.shift();
      if (failure) throw failure();
      if (this.outage || server.outage) throw connectionRefused();
    };
    return {
      read: (p, s, k) => {
        validate(p, s, k);
        check();
        const entry = server.values.get(keyOf(p, s, k));
        if (!entry) throw new KeyNotFoundError(p, s, k);
        return Uint8Array.from(entry.value);
      },
      write: (p, s, k, value) => {
        validate(p, s, k);
        check();
        server.commitWrite(keyOf(p, s, k), value, undefined);
      },
      remove: (p, s, k) => {
        validate(p, s, k);
        check();
        server.commitRemove(keyOf(p, s, k));
      },
      list: (p, s) => {
        validate(p, s);
        check();
        return server.keys().filter((x) => x.primaryNamespace === p && x.secondaryNamespace === s).map((x) => x.key);
      },
      listAll: () => {
        check();
        return server.keys();
      },
    };
  }
}
