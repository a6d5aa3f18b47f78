/**
 * A pass-through AsyncKVStore that records what happened: writes and when they resolved,
 * reads in flight (to prove parallelism), and per-key failure injection.
 */
import type { AsyncKVStore, StoreKey } from '../../../src/store/types.js';
import { connectionRefused } from './memory-store.js';

export interface RecordedWrite {
  key: StoreKey;
  bytes: number;
  resolvedAt: number;
}

type KeyFilter = (k: StoreKey) => boolean;

export class RecordingStore implements AsyncKVStore {
  readonly writes: RecordedWrite[] = [];
  readsInFlight = 0;
  maxReadsInFlight = 0;
  reads = 0;
  /** Writes to keys matching this filter fail (transiently) while set. */
  failWritesTo: KeyFilter | undefined;
  /** Every operation fails (transiently) while true. */
  outage = false;
  /** Called synchronously when a write has resolved (before the caller continues). */
  afterWrite: ((w: RecordedWrite) => void) | undefined;

  constructor(readonly inner: AsyncKVStore) {}

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
    const recorded = { key, bytes: value.length, resolvedAt: performance.now() };
    this.writes.push(recorded);
    this.afterWrite?.(recorded);
  }

  async remove(p: string, s: string, k: string, lazy: boolean): Promise<void> {
    this.check();
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

  /** True if a write to exactly this key has resolved. */
  wrote(p: string, s: string, k: string): boolean {
    return this.writes.some((w) => w.key.primaryNamespace === p && w.key.secondaryNamespace === s && w.key.key === k);
  }
}
