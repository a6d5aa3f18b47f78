/**
 * A pass-through store that can "crash" the wallet using it at an exact persistence step.
 *
 * A real crash can happen between any two instructions; what matters for persistence is where
 * it falls relative to each write: before the server has the bytes, or after the server has
 * them but before the wallet learns it. `CrashableStore` arms a crash point on the n-th write
 * matching a filter and, when it is reached, cuts the store off (every operation from then on,
 * and every one still waiting, fails; nothing more reaches the server) and calls `onCrash`
 * synchronously, so the caller can drop the node in the same tick, before LDK acts again.
 */
import type { AsyncKVStore, StoreKey } from '../src/store/types.js';

/** Where a crash falls relative to one write. */
export type CrashTiming =
  /** The write never reaches the server. */
  | 'before-durable'
  /** The server stored the write; the wallet never hears back. */
  | 'after-durable';

/** What a write is, in LDK's layout. */
export type WriteKind = 'monitor-update' | 'monitor' | 'manager' | 'other';

export interface WriteRecord {
  /** 1-based position among this store's durable writes. */
  seq: number;
  /** 1-based position among this store's write calls (see `onCall`). */
  callSeq: number;
  kind: WriteKind;
  key: StoreKey;
  bytes: number;
  /** Time from the call to durability. */
  latencyMs: number;
}

export interface CrashPoint {
  /** Which writes count (default: all). */
  kind?: WriteKind | WriteKind[];
  /** Crash at the n-th matching write after arming (1-based). */
  ordinal: number;
  timing: CrashTiming;
  /** Only writes made while this holds count (e.g. to avoid a window with a known issue). */
  when?: (kind: WriteKind, key: StoreKey) => boolean;
}

export interface CrashEvent {
  point: CrashPoint;
  key: StoreKey;
  kind: WriteKind;
}

/** Every operation of a crashed store fails with this. */
export class SimulatedCrashError extends Error {
  constructor() {
    super('the wallet crashed (simulated): the store is gone');
    this.name = 'SimulatedCrashError';
  }
}

export function writeKind(key: StoreKey): WriteKind {
  if (key.primaryNamespace === 'monitor_updates') return 'monitor-update';
  if (key.primaryNamespace === 'monitors') return 'monitor';
  if (key.primaryNamespace === '' && key.key === 'manager') return 'manager';
  return 'other';
}

interface Armed {
  point: CrashPoint;
  seen: number;
  onCrash: (event: CrashEvent) => void;
}

export class CrashableStore implements AsyncKVStore {
  /** Durable writes, in the order they became durable. */
  readonly writes: WriteRecord[] = [];
  private seq = 0;
  private armed: Armed | undefined;
  private cut = false;
  /** Rejections of operations parked when the crash happened. */
  private readonly parked = new Set<(err: Error) => void>();
  private readonly listeners = new Set<(w: WriteRecord) => void>();
  /** While set, writes wait for it before going to the server (see `pauseWrites`). */
  private paused: Promise<void> | undefined;
  private readonly callListeners = new Set<(callSeq: number, kind: WriteKind, key: StoreKey) => void>();
  private calls = 0;

  constructor(readonly inner: AsyncKVStore) {}

  get crashed(): boolean {
    return this.cut;
  }

  /** Arms a crash point (replacing any armed one). `onCrash` runs synchronously when it is hit. */
  crashAt(point: CrashPoint, onCrash: (event: CrashEvent) => void): void {
    if (point.ordinal < 1) throw new RangeError('ordinal is 1-based');
    this.armed = { point, seen: 0, onCrash };
  }

  disarm(): void {
    this.armed = undefined;
  }

  /** Crashes now: nothing more reaches the server; everything pending fails. */
  crash(): void {
    if (this.cut) return;
    this.cut = true;
    this.armed = undefined;
    for (const reject of this.parked) reject(new SimulatedCrashError());
    this.parked.clear();
  }

  /** Called after each durable write (before the caller learns of it). */
  onWrite(listener: (w: WriteRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Holds every write until the returned function is called (reads go through): places
   * another writer's activity between this store's reads and its writes, deterministically.
   */
  pauseWrites(): () => void {
    let release!: () => void;
    this.paused = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.paused = undefined;
      release();
    };
  }

  /** Called when a write is made, before it is sent (and before a crash point is checked). */
  onCall(listener: (callSeq: number, kind: WriteKind, key: StoreKey) => void): () => void {
    this.callListeners.add(listener);
    return () => this.callListeners.delete(listener);
  }

  /** Runs `op` unless crashed; if the store crashes while it runs, the caller never hears back. */
  private guarded<T>(op: () => Promise<T>): Promise<T> {
    if (this.cut) return Promise.reject(new SimulatedCrashError());
    return new Promise<T>((resolve, reject) => {
      this.parked.add(reject);
      op().then(
        (value) => {
          if (!this.parked.delete(reject)) return;
          if (this.cut) reject(new SimulatedCrashError());
          else resolve(value);
        },
        (err: unknown) => {
          if (this.parked.delete(reject)) reject(this.cut ? new SimulatedCrashError() : err);
        },
      );
    });
  }

  /** True if this write is the armed crash point (counting it). */
  private hits(kind: WriteKind, key: StoreKey): Armed | undefined {
    const armed = this.armed;
    if (!armed) return undefined;
    const kinds = armed.point.kind === undefined ? undefined : Array.isArray(armed.point.kind) ? armed.point.kind : [armed.point.kind];
    if (kinds && !kinds.includes(kind)) return undefined;
    if (armed.point.when && !armed.point.when(kind, key)) return undefined;
    armed.seen++;
    return armed.seen === armed.point.ordinal ? armed : undefined;
  }

  private fire(armed: Armed, key: StoreKey, kind: WriteKind): void {
    this.crash();
    armed.onCrash({ point: armed.point, key, kind });
  }

  write(primaryNamespace: string, secondaryNamespace: string, key: string, value: Uint8Array): Promise<void> {
    const storeKey = { primaryNamespace, secondaryNamespace, key };
    const kind = writeKind(storeKey);
    if (this.cut) return Promise.reject(new SimulatedCrashError());
    const callSeq = ++this.calls;
    for (const listener of this.callListeners) listener(callSeq, kind, storeKey);
    const hit = this.hits(kind, storeKey);
    if (hit?.point.timing === 'before-durable') {
      this.fire(hit, storeKey, kind);
      return Promise.reject(new SimulatedCrashError());
    }
    const started = performance.now();
    const paused = this.paused;
    return this.guarded(async () => {
      if (paused) await paused;
      if (this.cut) throw new SimulatedCrashError();
      await this.inner.write(primaryNamespace, secondaryNamespace, key, value);
      const record: WriteRecord = { seq: ++this.seq, callSeq, kind, key: storeKey, bytes: value.length, latencyMs: performance.now() - started };
      this.writes.push(record);
      for (const listener of this.listeners) listener(record);
      if (hit) this.fire(hit, storeKey, kind);
    });
  }

  read(primaryNamespace: string, secondaryNamespace: string, key: string): Promise<Uint8Array> {
    return this.guarded(() => this.inner.read(primaryNamespace, secondaryNamespace, key));
  }

  remove(primaryNamespace: string, secondaryNamespace: string, key: string, lazy: boolean): Promise<void> {
    return this.guarded(() => this.inner.remove(primaryNamespace, secondaryNamespace, key, lazy));
  }

  list(primaryNamespace: string, secondaryNamespace: string): Promise<string[]> {
    return this.guarded(() => this.inner.list(primaryNamespace, secondaryNamespace));
  }

  listAll(): Promise<StoreKey[]> {
    return this.guarded(() => this.inner.listAll());
  }
}
