/**
 * A pass-through AsyncKVStore that records what happened: writes and when they resolved,
 * reads in flight (to prove parallelism), and per-key failure injection.
 */
import { supportsAtomicBatch, type AsyncKVStore, type KeyValueWrite, type StoreKey } from '../../../src/store/types.js';
import { connectionRefused } from './memory-store.js';
import { wrapStore, type StoreOverrides } from '../../../harness/wrapped-store.js';

export interface RecordedWrite {
  key: StoreKey;
  bytes: number;
  resolvedAt: number;
}

type KeyFilter = (k: StoreKey) => boolean;

const keyId = (p: string, s: string, k: string) => JSON.stringify([p, s, k]);

export class RecordingStore implements AsyncKVStore {
  readonly writes: RecordedWrite[] = [];
  /** The keys of each durable batch write. */
  readonly batches: StoreKey[][] = [];
  readsInFlight = 0;
  maxReadsInFlight = 0;
  reads = 0;
  /** Writes to keys matching this filter fail (transiently) while set. */
  failWritesTo: KeyFilter | undefined;
  /** Every operation fails (transiently) while true. */
  outage = false;
  /** Called synchronously when a write has resolved (before the caller continues). */
  afterWrite: ((w: RecordedWrite) => void) | undefined;
  /** Called synchronously when a remove is asked for (before it is sent). */
  beforeRemove: ((k: StoreKey) => void) | undefined;
  /** What the server holds per key, as far as resolved writes and removes tell. */
  private readonly durable = new Map<string, Uint8Array>();

  /**
   * Present when the inner store writes atomic batches (unless `atomicBatches: false`, which
   * makes the persister write the manager and each monitor write separately).
   */
  readonly writeBatch?: (writes: readonly KeyValueWrite[]) => Promise<void>;

  constructor(
    readonly inner: AsyncKVStore,
    options: { atomicBatches?: boolean } = {},
  ) {
    if (options.atomicBatches !== false && supportsAtomicBatch(inner)) {
      this.writeBatch = async (writes) => {
        this.check();
        // All or nothing, like the request it stands for: one refused key fails the batch.
        if (writes.some((w) => this.failWritesTo?.(w))) throw connectionRefused();
        await inner.writeBatch(writes);
        this.batches.push(writes.map(({ primaryNamespace, secondaryNamespace, key }) => ({ primaryNamespace, secondaryNamespace, key })));
        const resolvedAt = performance.now();
        for (const w of writes) this.durable.set(keyId(w.primaryNamespace, w.secondaryNamespace, w.key), w.value);
        const recorded = writes.map((w) => ({ key: { primaryNamespace: w.primaryNamespace, secondaryNamespace: w.secondaryNamespace, key: w.key }, bytes: w.value.length, resolvedAt }));
        this.writes.push(...recorded);
        for (const r of recorded) this.afterWrite?.(r);
      };
    }
  }

  private check(): void {
    if (this.outage) throw connectionRefused();
  }

  async read(p: string, s: string, k: string): Promise<Uint8Array> {
    this.check();
    this.reads++;
    this.readsInFlight++;
    this.maxReadsInFlight = Math.max(this.maxReadsInFlight, this.readsInFlight);
    try {
      return await this.inner.read(p, s, k);
    } finally {
      this.readsInFlight--;
    }
  }

  async write(p: string, s: string, k: string, value: Uint8Array): Promise<void> {
    this.check();
    const key = { primaryNamespace: p, secondaryNamespace: s, key: k };
    if (this.failWritesTo?.(key)) throw connectionRefused();
    await this.inner.write(p, s, k, value);
    this.durable.set(keyId(p, s, k), value);
    const recorded = { key, bytes: value.length, resolvedAt: performance.now() };
    this.writes.push(recorded);
    this.afterWrite?.(recorded);
  }

  async remove(p: string, s: string, k: string, lazy: boolean): Promise<void> {
    this.check();
    this.beforeRemove?.({ primaryNamespace: p, secondaryNamespace: s, key: k });
    // Forgotten at once: from here on the key may be gone (a lazy remove resolves before it is sent).
    this.durable.delete(keyId(p, s, k));
    await this.inner.remove(p, s, k, lazy);
  }

  async list(p: string, s: string): Promise<string[]> {
    this.check();
    this.readsInFlight++;
    this.maxReadsInFlight = Math.max(this.maxReadsInFlight, this.readsInFlight);
    try {
      return await this.inner.list(p, s);
    } finally {
      this.readsInFlight--;
    }
  }

  listAll(): Promise<StoreKey[]> {
    this.check();
    return this.inner.listAll();
  }

  /** The value of this key's last resolved write, unless it was removed since. */
  durableValue(p: string, s: string, k: string): Uint8Array | undefined {
    return this.durable.get(keyId(p, s, k));
  }

  /** True if a write to exactly this key has resolved. */
  wrote(p: string, s: string, k: string): boolean {
    return this.writes.some((w) => w.key.primaryNamespace === p && w.key.secondaryNamespace === s && w.key.key === k);
  }
}

/**
 * `inner` with some operations replaced (to hold or fail them in a test); the rest pass through.
 * No `writeBatch`, so the persister writes each key on its own.
 */
export function overridingStore(inner: AsyncKVStore, overrides: Pick<StoreOverrides, 'read' | 'write' | 'remove'>): AsyncKVStore {
  return wrapStore(inner, { ...overrides, batches: false });
}
