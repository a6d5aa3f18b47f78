/**
 * A pass-through store that can "crash" the wallet using it at an exact persistence step.
 *
 * A real crash can happen between any two instructions; what matters for persistence is where
 * it falls relative to each write: before the server has the bytes, or after the server has
 * them but before the wallet learns it. `CrashableStore` arms a crash point on the n-th write
 * matching a filter and, when it is reached, cuts the store off (every operation from then on,
 * and every one still waiting, fails; nothing more is sent, while a request already on the wire
 * may still land, as after a real crash) and calls `onCrash`
 * synchronously, so the caller can drop the node in the same tick, before LDK acts again.
 *
 * Atomic batches. When the inner store writes atomic batches (`VssStore.writeBatch`), so does
 * this one, and VssPersister then writes each ChannelManager together with the monitor
 * updates waiting for it in ONE request (the default production path). The writes of a batch
 * still count one by one, in the batch's order (the manager first), so a crash point keeps
 * meaning "the n-th monitor update" or "the n-th manager write"; but a batch is one request,
 * so a crash at any of its writes crashes the whole batch at that timing: `before-durable`,
 * none of it reaches the server; `after-durable`, all of it is durable and the wallet never
 * hears back. Pass `atomicBatches: false` to hide `writeBatch` (the persister then writes the
 * manager first and each monitor write separately, the older path).
 */
import { supportsAbort, supportsAtomicBatch, type AsyncKVStore, type AtomicBatchKVStore, type KeyValueWrite, type StoreKey } from '../src/store/types.js';

/** Where a crash falls relative to one write. */
export type CrashTiming =
  /** The write never reaches the server. */
  | 'before-durable'
  /** The server stored the write; the wallet never hears back. */
  | 'after-durable';

/** What a write is, in LDK's layout. */
export type WriteKind = 'monitor-update' | 'monitor' | 'manager' | 'other';

/** One write of a request: a single write is a request of one. */
export interface RequestItem {
  kind: WriteKind;
  key: StoreKey;
}

export interface WriteRecord {
  /** 1-based position among this store's durable writes. */
  seq: number;
  /** 1-based position among this store's write calls (see `onCall`); each write of a batch has its own. */
  callSeq: number;
  kind: WriteKind;
  key: StoreKey;
  bytes: number;
  /** Time from the call to durability. */
  latencyMs: number;
  /** Set for a write made inside an atomic batch: that batch's `BatchRecord.seq`. */
  batchSeq?: number;
  /** How many writes the request carried (1 for a single write). */
  requestSize: number;
}

/** A durable atomic batch: one request, all of its writes durable together. */
export interface BatchRecord {
  /** 1-based position among this store's durable batches. */
  seq: number;
  items: RequestItem[];
  bytes: number;
  latencyMs: number;
}

export interface CrashPoint {
  /** Which writes count (default: all). */
  kind?: WriteKind | WriteKind[];
  /** Crash at the n-th matching write after arming (1-based). */
  ordinal: number;
  timing: CrashTiming;
  /**
   * Only writes made while this holds count (e.g. to avoid a window with a known issue).
   * `request` lists every write of the same request (the write itself included): a crash at
   * one write of a batch crashes all of them.
   */
  when?: (kind: WriteKind, key: StoreKey, request: readonly RequestItem[]) => boolean;
}

export interface CrashEvent {
  point: CrashPoint;
  /** The write the crash point counted. */
  key: StoreKey;
  kind: WriteKind;
  /** Every write of the request that crashed (more than one for a batch). */
  request: RequestItem[];
}

/** Every operation of a crashed store fails with this. */
export class SimulatedCrashError extends Error {
  constructor() {
    super('the wallet crashed (simulated): the store is gone');
    this.name = 'SimulatedCrashError';
  }
}

/** Why an armed crash point will never be reached. */
export type CrashPointCancelReason = 'superseded' | 'disarmed' | 'crashed';

/**
 * An armed crash point that can no longer be reached: another was armed in its place, it was
 * disarmed, or the store crashed another way first. Whoever waits on the crash gets this
 * instead of waiting forever.
 */
export class CrashPointCancelledError extends Error {
  constructor(
    readonly reason: CrashPointCancelReason,
    message: string,
  ) {
    super(message);
    this.name = 'CrashPointCancelledError';
  }
}

function describePoint(point: CrashPoint): string {
  const kinds = point.kind === undefined ? 'any' : Array.isArray(point.kind) ? point.kind.join('|') : point.kind;
  return `${point.timing} at write #${point.ordinal} of kind ${kinds}`;
}

export function writeKind(key: StoreKey): WriteKind {
  if (key.primaryNamespace === 'monitor_updates') return 'monitor-update';
  if (key.primaryNamespace === 'monitors') return 'monitor';
  if (key.primaryNamespace === '' && key.key === 'manager') return 'manager';
  return 'other';
}

export interface CrashableStoreOptions {
  /**
   * Offer `writeBatch` when the inner store has it (default true). `false` hides it, so the
   * persister falls back to writing the manager first and each monitor write separately.
   */
  atomicBatches?: boolean;
}

interface Armed {
  point: CrashPoint;
  seen: number;
  onCrash: (event: CrashEvent) => void;
  onCancel?: (err: CrashPointCancelledError) => void;
}

/** A write call as made: its place in the call order and what it is. */
interface CalledItem extends RequestItem {
  callSeq: number;
  bytes: number;
}

export class CrashableStore implements AsyncKVStore {
  /** Durable writes, in the order they became durable (each write of a batch on its own). */
  readonly writes: WriteRecord[] = [];
  /** Durable atomic batches, in the order they became durable. */
  readonly batches: BatchRecord[] = [];
  /**
   * Present when the inner store writes atomic batches (and `atomicBatches` is not false),
   * so `supportsAtomicBatch(this)` answers for the store underneath.
   */
  readonly writeBatch?: (writes: readonly KeyValueWrite[]) => Promise<void>;
  private seq = 0;
  private batchSeq = 0;
  private armed: Armed | undefined;
  private cut = false;
  /** Rejections of operations parked when the crash happened. */
  private readonly parked = new Set<(err: Error) => void>();
  private readonly listeners = new Set<(w: WriteRecord) => void>();
  /** While set, writes wait for it before going to the server (see `pauseWrites`). */
  private paused: Promise<void> | undefined;
  private readonly callListeners = new Set<(callSeq: number, kind: WriteKind, key: StoreKey) => void>();
  private calls = 0;

  constructor(
    readonly inner: AsyncKVStore,
    options: CrashableStoreOptions = {},
  ) {
    if (options.atomicBatches !== false && supportsAtomicBatch(inner)) {
      const batching: AtomicBatchKVStore = inner;
      this.writeBatch = (writes) => this.batch(batching, writes);
    }
  }

  get crashed(): boolean {
    return this.cut;
  }

  /** Whether this store offers atomic batches (the persister's default path). */
  get atomicBatches(): boolean {
    return this.writeBatch !== undefined;
  }

  /**
   * Arms a crash point (replacing any armed one). `onCrash` runs synchronously when it is hit.
   * `onCancel` runs instead if the point can no longer be reached: another point is armed in
   * its place, it is disarmed, or the store crashes another way first (a point cancelled while
   * a write it counted is on the wire does not fire when that write lands).
   */
  crashAt(point: CrashPoint, onCrash: (event: CrashEvent) => void, onCancel?: (err: CrashPointCancelledError) => void): void {
    if (point.ordinal < 1) throw new RangeError('ordinal is 1-based');
    if (this.cut) throw new CrashPointCancelledError('crashed', `the store has already crashed: crash point (${describePoint(point)}) could never be reached`);
    this.cancelArmed('superseded', (p) => `crash point (${describePoint(p)}) was superseded by another crashAt before it was reached`);
    this.armed = { point, seen: 0, onCrash, onCancel };
  }

  disarm(): void {
    this.cancelArmed('disarmed', (p) => `crash point (${describePoint(p)}) was disarmed before it was reached`);
  }

  private cancelArmed(reason: CrashPointCancelReason, message: (point: CrashPoint) => string): void {
    const armed = this.armed;
    this.armed = undefined;
    armed?.onCancel?.(new CrashPointCancelledError(reason, message(armed.point)));
  }

  /**
   * Crashes now: nothing more is sent, everything pending fails. An inner store that can abort
   * (VssStore) is aborted in the same instant, so what it still had queued (a newer write of a
   * key waiting behind one on the wire) is never sent; what was already on the wire may land,
   * as after a real crash.
   */
  crash(): void {
    if (this.cut) return;
    this.cut = true;
    this.cancelArmed('crashed', (p) => `the store crashed another way before crash point (${describePoint(p)}) was reached`);
    if (supportsAbort(this.inner)) this.inner.abort().catch(() => {});
    for (const reject of this.parked) reject(new SimulatedCrashError());
    this.parked.clear();
  }

  /** Called after each durable write (before the caller learns of it); once per write of a batch. */
  onWrite(listener: (w: WriteRecord) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /**
   * Holds every write (batches included) until the returned function is called (reads go
   * through): places another writer's activity between this store's reads and its writes,
   * deterministically.
   */
  pauseWrites(): () => void {
    let release!: () => void;
    this.paused = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.paused = undefined;
      release();
    };
  }

  /**
   * Called when a write is made, before it is sent (and before a crash point is checked);
   * once per write of a batch, in the batch's order.
   */
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
  private hits(item: RequestItem, request: readonly RequestItem[]): Armed | undefined {
    const armed = this.armed;
    if (!armed) return undefined;
    const kinds = armed.point.kind === undefined ? undefined : Array.isArray(armed.point.kind) ? armed.point.kind : [armed.point.kind];
    if (kinds && !kinds.includes(item.kind)) return undefined;
    if (armed.point.when && !armed.point.when(item.kind, item.key, request)) return undefined;
    armed.seen++;
    return armed.seen === armed.point.ordinal ? armed : undefined;
  }

  private fire(armed: Armed, item: RequestItem, request: readonly RequestItem[]): void {
    // Cancelled while its write was on the wire: whoever armed it has already been told.
    if (this.armed !== armed) return;
    this.armed = undefined;
    this.crash();
    armed.onCrash({ point: armed.point, key: item.key, kind: item.kind, request: request.map(({ kind, key }) => ({ kind, key })) });
  }

  /**
   * The common path of single writes and batches: announce each write, count it against the
   * armed crash point (a hit anywhere in the request crashes the request), then send the
   * request unless cut, record every write as durable, and crash after it if so armed.
   */
  private request(writes: readonly KeyValueWrite[], send: () => Promise<void>, batched: boolean): Promise<void> {
    if (this.cut) return Promise.reject(new SimulatedCrashError());
    const items: CalledItem[] = writes.map((w) => {
      const key = { primaryNamespace: w.primaryNamespace, secondaryNamespace: w.secondaryNamespace, key: w.key };
      return { key, kind: writeKind(key), callSeq: ++this.calls, bytes: w.value.length };
    });
    const request: RequestItem[] = items.map(({ kind, key }) => ({ kind, key }));
    for (const item of items) for (const listener of this.callListeners) listener(item.callSeq, item.kind, item.key);
    let hit: { armed: Armed; item: RequestItem } | undefined;
    for (const item of request) {
      const armed = this.hits(item, request);
      if (armed) {
        hit = { armed, item };
        break;
      }
    }
    if (hit?.armed.point.timing === 'before-durable') {
      this.fire(hit.armed, hit.item, request);
      return Promise.reject(new SimulatedCrashError());
    }
    const started = performance.now();
    const paused = this.paused;
    return this.guarded(async () => {
      if (paused) await paused;
      if (this.cut) throw new SimulatedCrashError();
      await send();
      const latencyMs = performance.now() - started;
      const batchSeq = batched ? ++this.batchSeq : undefined;
      const records = items.map(
        (item): WriteRecord => ({ seq: ++this.seq, callSeq: item.callSeq, kind: item.kind, key: item.key, bytes: item.bytes, latencyMs, batchSeq, requestSize: items.length }),
      );
      if (batchSeq !== undefined) this.batches.push({ seq: batchSeq, items: request, bytes: items.reduce((n, i) => n + i.bytes, 0), latencyMs });
      for (const record of records) {
        this.writes.push(record);
        for (const listener of this.listeners) listener(record);
      }
      if (hit) this.fire(hit.armed, hit.item, request);
    });
  }

  write(primaryNamespace: string, secondaryNamespace: string, key: string, value: Uint8Array): Promise<void> {
    return this.request([{ primaryNamespace, secondaryNamespace, key, value }], () => this.inner.write(primaryNamespace, secondaryNamespace, key, value), false);
  }

  private batch(inner: AtomicBatchKVStore, writes: readonly KeyValueWrite[]): Promise<void> {
    // Nothing to send: the inner store resolves an empty batch without a request.
    if (writes.length === 0) return this.guarded(() => inner.writeBatch(writes));
    return this.request(writes, () => inner.writeBatch(writes), true);
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
