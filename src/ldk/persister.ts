/**
 * VssPersister: an LDK `Persist` for ChainMonitor that never blocks the event loop.
 *
 * Every callback returns `InProgress` after queueing a write; the write goes to the store
 * asynchronously and only once it is durable is `chainMonitor.channel_monitor_updated` called
 * for each update id it covers. Until then LDK holds the channel: no message that depends on
 * the update leaves the node, which is what keeps a lagging or unreachable server safe.
 *
 * Layout is LDK's MonitorUpdatingPersister's (full monitors with the 0xFF 0xFF sentinel under
 * `monitors/<name>`, deltas under `monitor_updates/<name>/<id>`, a full monitor every N
 * updates), so LDK's own reader restores it.
 *
 * Ordering. Linked to the node's ChannelManager writer (LdkEventLoop does it), every monitor
 * write waits until a manager that knows the update is durable, so a restored manager is
 * never older than its monitors (LDK would force-close). Deltas of one channel may then be in
 * flight together: if a crash leaves a gap, the stored manager still holds the missing
 * updates as in flight and LDK re-issues exactly the same bytes on restart. Unlinked, a delta
 * starts only when nothing else of its channel is in flight, so the store never holds update N
 * without N-1 (LDK's reader stops at the first gap); a full monitor holds every update up to its
 * own, so it need not wait. At most one full monitor per channel is
 * in flight, and a newer one replaces queued or failing older writes it contains, so an old
 * snapshot is never written over a newer one. Channels proceed in parallel.
 */
import * as ldk from 'lightningdevkit';
import { supportsAtomicBatch, type AsyncKVStore, type AtomicBatchKVStore, type KeyValueWrite } from '../store/types.js';
import { KeyNotFoundError } from '../store/errors.js';
import { PersisterStoppedError, StoreMismatchError } from './errors.js';
import { VssStore } from '../store/vss-store.js';
import {
  ARCHIVED_CHANNEL_MONITOR_NAMESPACE,
  CHANNEL_MANAGER_NAMESPACE,
  CHANNEL_MONITOR_NAMESPACE,
  CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE,
  LEGACY_CLOSED_CHANNEL_UPDATE_ID,
  monitorName,
  updateKey,
  withSentinel,
} from './layout.js';
import { describeError, stderrLogger, type PersistenceLogger } from './log.js';
import { StatusEmitter } from './status-emitter.js';
import { readMonitorWithUpdates, type MonitorReadContext } from './monitors.js';
import { backoffDelay, isTransientStoreError, sleep, validateBackoff, type BackoffOptions } from './retry.js';
import { isNullPointer } from './pointers.js';
import { writeManagerBytes } from './manager.js';

export interface VssPersisterOptions extends MonitorReadContext {
  store: AsyncKVStore;
  /**
   * Deltas of one channel in flight at once when linked to a manager writer (unlinked: 1).
   * Default 8.
   */
  maxConcurrentWritesPerChannel?: number;
  /**
   * Write the full monitor instead of a delta for every update id that is a multiple of this
   * (LDK's `maximum_pending_updates`). Bounds restore work and delta count. Default 100.
   */
  maximumPendingUpdates?: number;
  /** Backoff between retries of a failed write. */
  backoff?: BackoffOptions;
  /** A write pending longer than this emits `stalled`. Default 10 s. */
  stallThresholdMs?: number;
  /** Decides which errors are retried; the rest stop the persister. Default `isTransientStoreError`. */
  isTransient?: (err: unknown) => boolean;
  /** Where retries, stalls and failures are reported (pino-compatible). */
  log?: PersistenceLogger;
}

export type MonitorWriteKind = 'update' | 'full' | 'archive';

/** A durable write and the update ids it released to LDK. */
export interface DurableWriteEvent {
  monitorName: string;
  kind: MonitorWriteKind;
  /** Update ids passed to `channel_monitor_updated` because of this write. */
  completedUpdateIds: bigint[];
  /** Highest update id the stored state now contains. */
  coversUpdateId: bigint;
  bytes: number;
  /** Time from the LDK callback to durability. */
  latencyMs: number;
  attempts: number;
}

export interface PendingWriteInfo {
  monitorName: string;
  /** Update ids LDK is waiting on for this channel. */
  awaitingUpdateIds: bigint[];
  /** Writes queued (including the one in flight). */
  queuedWrites: number;
  /**
   * How long the channel has been waiting: the age of its oldest queued write, or of the oldest
   * update LDK still waits for if that is older (e.g. one a later full monitor took over).
   */
  pendingMs: number;
  /** Failed attempts of the write that has failed most often. */
  attempts: number;
  /** A write waits for a ChannelManager write that knows its update. */
  waitingForManager: boolean;
  lastError?: string;
}

/** What the persister knows about one channel's monitor. */
export interface MonitorPersistenceState {
  monitorName: string;
  /** Highest update id LDK handed over (a monitor's first persist counts its latest id). */
  latestUpdateId: bigint;
  /** Highest update id contained in durable storage. */
  durableUpdateId: bigint | undefined;
  /** Update ids LDK is waiting on. */
  awaitingUpdateIds: bigint[];
}

export interface RetryEvent {
  monitorName: string;
  attempt: number;
  delayMs: number;
  error: unknown;
}

export interface VssPersisterEvents {
  durable: [DurableWriteEvent];
  stalled: [PendingWriteInfo];
  recovered: [{ monitorName: string; pendingMs: number }];
  retry: [RetryEvent];
  fatal: [Error];
}

/** Options of `VssPersister.close()` and `shutdown()`. */
export interface PersisterCloseOptions {
  /**
   * How long to wait for writes already sent to the store (a monitor update on the wire, a
   * batch with the manager) to settle. Default 10 s; 0 does not wait.
   */
  timeoutMs?: number;
}

/** What `shutdown()` (or `close()`) leaves behind: every update LDK handed over is either acknowledged or listed here. */
export interface PersisterCloseReport {
  /**
   * Update ids LDK was told are in progress and that were not reported complete
   * (`channel_monitor_updated`), per channel: not known to be durable. LDK keeps these channels
   * held; after a restart it re-issues the updates the stored manager holds as in flight.
   */
  notPersisted: { monitorName: string; updateIds: bigint[] }[];
  /** How many update ids `notPersisted` lists. */
  notPersistedCount: number;
  /**
   * Writes still on the wire when `timeoutMs` ran out. The server may yet apply them (and a
   * landing one is then reported to LDK), so `notPersisted` may overstate what is missing,
   * never understate it.
   */
  writesInFlight: number;
  /** The error that had stopped the persister before or during the close, if any. */
  fatalError: Error | undefined;
}

/** Longest wait `close()` accepts (a Node timer beyond it fires after 1 ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface VssPersisterStats {
  /** Value bytes of successful writes. */
  bytesWritten: number;
  updateWrites: number;
  fullWrites: number;
  /** Lazy removals of deltas made obsolete by a full monitor. */
  removals: number;
  completedUpdates: number;
  retries: number;
}

interface QueuedWrite {
  kind: MonitorWriteKind;
  /** Store key (secondary namespace and key; primary follows from kind). */
  key: string;
  bytes: Uint8Array;
  /** Highest update id contained once this write is durable. */
  coversUpdateId: bigint;
  enqueuedAt: number;
  attempts: number;
  lastError?: unknown;
  /**
   * The write may only be sent once a ChannelManager serialized at or after this tick is
   * durable (see `linkManagerWriter`). 0 = no constraint.
   */
  gateTick: number;
  /** Started, but waiting for a manager write that knows the update. */
  waitingForManager?: boolean;
}

/** Hooks an event loop gives the persister so monitor writes can wait for the manager. */
export interface ManagerWriter {
  /** Persist the ChannelManager soon, even if LDK has not asked. */
  requestPersist(): void;
}

/** What the persister gives back to the manager's writer. */
export interface ManagerWriteTracker {
  /** Call synchronously right before serializing the manager. */
  tickNow(): number;
  /**
   * Writes the manager serialized at `tick` and resolves once it is durable (then `tick`
   * counts as durable). When the manager's store is the persister's own and supports atomic
   * batches, every monitor write waiting for a manager that knows its update goes in the
   * SAME request: one round trip instead of two, and still no monitor update on the server
   * without a manager that knows it. Rejects with the store's error (the caller retries).
   */
  writeManager(bytes: Uint8Array, tick: number): Promise<void>;
  /** Call when the manager serialized at `tick` is durable (if written by other means). */
  durable(tick: number): void;
  /**
   * Call when the writer has stopped for good (a write error that is not retried, a panic):
   * monitor writes waiting for a manager that knows them could never be sent, so the persister
   * stops too (`fatal`, `flush()` rejects) instead of reporting them as merely stalled.
   */
  writerFailed(err: Error): void;
  /**
   * Call when the writer has stopped gracefully (`LdkEventLoop.stop()`) and writes no further
   * manager. Monitor writes waiting for a manager that knows them stay held, unsent and not
   * reported to LDK (sending one would store an update no stored manager knows), and `flush()`
   * rejects with `PersisterStoppedError` once only such writes are left, instead of waiting
   * forever. Writes a durable manager already covers go on as usual; a writer linked later
   * (`linkManagerWriter`) is asked for the manager write the held ones need.
   */
  writerStopped(): void;
}

/** How a write waiting for the manager was let through. */
type GateOutcome = 'open' | 'batched';

interface ManagerWaiter {
  tick: number;
  /** Part of a manager batch on the wire: it lands with it or not at all (close() waits for it). */
  inBatch: boolean;
  resolve: (how: GateOutcome) => void;
  /** The monitor write waiting (batched with the manager when possible). */
  ch: ChannelState;
  write: QueuedWrite;
}

interface ChannelState {
  name: string;
  outpoint: ldk.OutPoint;
  /** Writes not started yet, in the order LDK handed them over. */
  pending: QueuedWrite[];
  /** Writes started: waiting for the manager, being written, or retrying. */
  running: Set<QueuedWrite>;
  /** Update ids LDK waits for, in the order LDK issued them. */
  awaiting: bigint[];
  /** Deltas known to be in the store (for cleanup after a full monitor write). */
  storedUpdateIds: Set<bigint>;
  /**
   * Deltas a previous run left in the store after a gap (restore's orphans): removed like the
   * others once a full monitor covers them, but never part of the durable state, as they are not
   * this run's updates (LDK issues those ids again, and only that write makes one durable).
   */
  leftoverUpdateIds: Set<bigint>;
  /** Highest update id contained in the newest durable full monitor. */
  durableFullCovers: bigint | undefined;
  latestUpdateId: bigint;
  durableUpdateId: bigint | undefined;
  /** Tick at which LDK handed over each update id not yet durable. */
  updateTicks: Map<bigint, number>;
  /**
   * When LDK first handed over each update id not yet durable. A stall is measured from the
   * oldest of these too: a full monitor that takes over a stalled update (a block during an
   * outage) is a new write, but LDK has been holding the channel since the update.
   */
  handedAt: Map<bigint, number>;
  /** When the current stall began (see `waitingSince`), if one was reported. */
  stalledSince: number | undefined;
  archived: boolean;
}

const IN_PROGRESS = ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_InProgress;

export class VssPersister extends StatusEmitter<VssPersisterEvents> {
  private readonly store: AsyncKVStore;
  private readonly maxPending: bigint;
  private readonly stallThresholdMs: number;
  private readonly isTransient: (err: unknown) => boolean;
  protected readonly log: PersistenceLogger;
  private readonly channels = new Map<string, ChannelState>();
  /** Deltas reported by `noteStoredUpdates` for channels LDK has not mentioned yet. */
  private readonly preStored = new Map<string, { stored: Set<bigint>; leftover: Set<bigint> }>();
  private readonly abort = new AbortController();
  private readonly stallTimer: NodeJS.Timeout;
  private chainMonitor: ldk.ChainMonitor | undefined;
  /** Completions that arrived before `attach` (normally none). */
  private readonly deferredCompletions: [ldk.OutPoint, bigint][] = [];
  private failure: Error | undefined;
  private closed = false;
  /** Counts LDK's update callbacks; orders monitor writes against manager serializations. */
  private tick = 0;
  private managerDurableTick = 0;
  private managerWriter: ManagerWriter | undefined;
  /** The linked manager writer stopped gracefully: no manager newer than `managerDurableTick` will come. */
  private managerWriterStopped = false;
  /** Identifies the current link, so a tracker of an earlier writer cannot speak for a later one. */
  private managerLink: object | undefined;
  private managerWaiters: ManagerWaiter[] = [];
  /** Set when manager and monitors share one store that writes batches atomically. */
  private batchStore: AtomicBatchKVStore | undefined;
  private idleWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];
  /** Set by the first close(); later calls get the same outcome. */
  private closing: Promise<PersisterCloseReport> | undefined;
  /** close() waiting for the writes on the wire to settle. */
  private settledWaiters: (() => void)[] = [];
  private ldkPersist: ldk.Persist | undefined;
  readonly stats: VssPersisterStats = { bytesWritten: 0, updateWrites: 0, fullWrites: 0, removals: 0, completedUpdates: 0, retries: 0 };

  constructor(private readonly options: VssPersisterOptions) {
    super();
    this.store = options.store;
    const max = options.maximumPendingUpdates ?? 100;
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`maximumPendingUpdates must be a positive integer, got ${max}`);
    this.maxPending = BigInt(max);
    const perChannel = options.maxConcurrentWritesPerChannel ?? 8;
    if (!Number.isInteger(perChannel) || perChannel < 1) throw new RangeError(`maxConcurrentWritesPerChannel must be a positive integer, got ${perChannel}`);
    validateBackoff(options.backoff);
    this.stallThresholdMs = options.stallThresholdMs ?? 10_000;
    // NaN would run the stall timer every millisecond and never report a stall; Infinity: never.
    if (!(this.stallThresholdMs >= 0)) throw new RangeError(`stallThresholdMs must be a number of milliseconds >= 0 (Infinity: never), got ${this.stallThresholdMs}`);
    this.isTransient = options.isTransient ?? isTransientStoreError;
    this.log = options.log ?? stderrLogger;
    this.stallTimer = setInterval(() => this.checkStalls(), Math.max(50, Math.min(1_000, this.stallThresholdMs / 2)));
    this.stallTimer.unref();
  }

  /** The LDK `Persist` to hand to `ChainMonitor.constructor_new`. */
  toLdkPersist(): ldk.Persist {
    this.ldkPersist ??= ldk.Persist.new_impl({
      persist_new_channel: (outpoint, monitor) => this.onNewChannel(outpoint, monitor),
      update_persisted_channel: (outpoint, update, monitor) => this.onUpdate(outpoint, update, monitor),
      archive_persisted_channel: (outpoint) => this.onArchive(outpoint),
    });
    return this.ldkPersist;
  }

  /** Connects the ChainMonitor that completions are reported to. Call right after building it. */
  attach(chainMonitor: ldk.ChainMonitor): void {
    this.chainMonitor = chainMonitor;
    for (const [outpoint, id] of this.deferredCompletions.splice(0)) this.reportCompleted(outpoint, id);
  }

  /**
   * Tells the persister which deltas a channel already has in the store (restore passes
   * what it read), so they are removed once a full monitor makes them obsolete. `afterGap`:
   * deltas stored after a gap in the update ids (restore's `orphanUpdateIds`), removed the same
   * way but never counted in `durableUpdateId`.
   */
  noteStoredUpdates(name: string, updateIds: Iterable<bigint>, afterGap: Iterable<bigint> = []): void {
    const ch = this.channels.get(name);
    const known = ch ? { stored: ch.storedUpdateIds, leftover: ch.leftoverUpdateIds } : (this.preStored.get(name) ?? { stored: new Set<bigint>(), leftover: new Set<bigint>() });
    for (const id of updateIds) known.stored.add(id);
    for (const id of afterGap) if (!known.stored.has(id)) known.leftover.add(id);
    if (!ch) this.preStored.set(name, known);
  }

  /** The store every monitor write goes to (the `store` option). */
  get monitorStore(): AsyncKVStore {
    return this.store;
  }

  /** The error that stopped the persister, if any (ConcurrentWriterError, RollbackDetectedError, ...). */
  get fatalError(): Error | undefined {
    return this.failure;
  }

  /** True once `close()` or `shutdown()` was called: nothing more is written or reported to LDK. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** Channels with writes queued or in flight. */
  pending(): PendingWriteInfo[] {
    const now = Date.now();
    const out: PendingWriteInfo[] = [];
    for (const ch of this.channels.values()) {
      if (ch.pending.length === 0 && ch.running.size === 0 && ch.awaiting.length === 0) continue;
      out.push(this.describe(ch, now));
    }
    return out;
  }

  /** Per-channel persistence state (for status displays and tests). */
  monitors(): MonitorPersistenceState[] {
    return [...this.channels.values()].map((ch) => ({
      monitorName: ch.name,
      latestUpdateId: ch.latestUpdateId,
      durableUpdateId: ch.durableUpdateId,
      awaitingUpdateIds: [...ch.awaiting],
    }));
  }

  /** True if any write has been pending longer than the stall threshold, or the persister failed. */
  get blocked(): boolean {
    if (this.failure) return true;
    return this.pending().some((p) => p.pendingMs >= this.stallThresholdMs);
  }

  /**
   * Resolves when every queued write is durable; rejects if the persister fails first. Once
   * `close()` was called it settles after close()'s wait: it resolves only if no update LDK
   * handed over is still owed.
   */
  flush(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    // Writes already on the wire when close() was called may still land: decide once close() has
    // waited for them.
    if (this.closing) return this.closing.then(() => this.flushedAfterClose());
    if (this.isIdle()) return Promise.resolve();
    const stuck = this.stuckOnStoppedWriter();
    if (stuck) return Promise.reject(stuck);
    return new Promise((resolve, reject) => this.idleWaiters.push({ resolve, reject }));
  }

  /**
   * Nothing more is written after close(), and an update LDK hands over then is not even
   * queued: only a persister holding nothing LDK still waits for has flushed.
   */
  private flushedAfterClose(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const owed = this.awaitingCount();
    if (this.isIdle() && owed === 0) return Promise.resolve();
    return Promise.reject(new PersisterStoppedError(`persister closed with writes pending (${owed} monitor update(s) not durable)`));
  }

  /**
   * Once the linked manager writer has stopped, a persister whose only writes left wait for a
   * manager write can never become idle: the error a flush() gets instead of waiting forever.
   */
  private stuckOnStoppedWriter(): PersisterStoppedError | undefined {
    if (!this.managerWriterStopped || this.managerWaiters.length === 0) return undefined;
    for (const ch of this.channels.values()) {
      // Anything else still on its way may finish (or fail) by itself: wait for it first.
      if ([...ch.running].some((w) => !w.waitingForManager)) return undefined;
    }
    return new PersisterStoppedError(
      `the ChannelManager writer (event loop) stopped before a manager that knows them was durable: ${this.awaitingCount()} monitor update(s) not durable, ${this.managerWaiters.length} monitor write(s) held; the channels stay held (LDK re-issues the updates after a restart)`,
    );
  }

  /** Settles waiting flush() calls whose outcome is known: idle (resolve) or stuck on a stopped manager writer (reject). */
  private settleIdleWaiters(): void {
    // Closing: writes that end unsent leave the persister idle but not durable; close() settles
    // the waiting flush() calls once its wait is over.
    if (this.closed) return;
    if (this.isIdle()) {
      for (const waiter of this.idleWaiters.splice(0)) waiter.resolve();
      return;
    }
    const stuck = this.stuckOnStoppedWriter();
    if (stuck) this.rejectWaiters(stuck);
  }

  /**
   * Accepts no further writes and stops retrying, starts nothing queued, then waits (up to
   * `timeoutMs`) for the writes already sent to the store: each that lands is reported to LDK
   * as usual. A wallet that exits after `await persister.close(); await store.close()` thus
   * loses no acknowledgement of a write that was on its way; updates that are not durable are
   * never reported complete, so LDK keeps those channels held (the safe outcome), and they are
   * logged (warn), listed by `monitors()`, and counted by a `flush()` rejection.
   * `shutdown()` is the same and resolves with that list.
   */
  async close(options: PersisterCloseOptions = {}): Promise<void> {
    await this.shutdown(options);
  }

  /**
   * `close()` that resolves with what is not persisted: every update LDK handed over before the
   * call is either acknowledged durable or listed. Every call (and `close()`) shares the first
   * call's wait and report; a waiting `flush()` settles once the wait is over.
   */
  shutdown(options: PersisterCloseOptions = {}): Promise<PersisterCloseReport> {
    const timeoutMs = options.timeoutMs ?? 10_000;
    // Refused before anything closes (a rejection, like close()'s, not a synchronous throw).
    if (!(timeoutMs >= 0 && timeoutMs <= MAX_TIMER_MS)) return Promise.reject(new RangeError(`close timeoutMs must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, got ${timeoutMs}`));
    this.closing ??= this.shutDown(timeoutMs);
    return this.closing;
  }

  private async shutDown(timeoutMs: number): Promise<PersisterCloseReport> {
    this.closed = true;
    clearInterval(this.stallTimer);
    // Ends backoff waits; writes still waiting for a manager write are never sent, except those
    // already in a manager batch on the wire (they land with it or not at all).
    this.abort.abort();
    this.releaseManagerWaiters((w) => !w.inBatch);
    await this.writesSettled(timeoutMs);
    const report = this.closeReport();
    if (report.notPersistedCount > 0 || report.writesInFlight > 0) {
      this.log.warn(
        { notPersisted: report.notPersistedCount, writesInFlight: report.writesInFlight, channels: report.notPersisted.map((c) => c.monitorName) },
        'persister closed with monitor updates not persisted: LDK was not told they completed, those channels stay held',
      );
    } else {
      this.log.info({}, 'persister closed: every monitor update LDK handed over is durable and acknowledged');
    }
    const waiting = this.idleWaiters.splice(0);
    const flushed = this.flushedAfterClose();
    flushed.catch(() => {});
    for (const waiter of waiting) flushed.then(waiter.resolve, waiter.reject);
    return report;
  }

  /** Resolves once no write is on the wire (or the persister failed: nothing more is reported then), or after `timeoutMs`. */
  private writesSettled(timeoutMs: number): Promise<void> {
    if (this.failure || this.runningCount() === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.settledWaiters = this.settledWaiters.filter((w) => w !== check);
        resolve();
      };
      const check = (): void => {
        if (this.failure || this.runningCount() === 0) done();
      };
      const timer = setTimeout(done, timeoutMs);
      this.settledWaiters.push(check);
    });
  }

  private runningCount(): number {
    let n = 0;
    for (const ch of this.channels.values()) n += ch.running.size;
    return n;
  }

  private closeReport(): PersisterCloseReport {
    const notPersisted = [...this.channels.values()].filter((ch) => ch.awaiting.length > 0).map((ch) => ({ monitorName: ch.name, updateIds: [...ch.awaiting] }));
    return {
      notPersisted,
      notPersistedCount: notPersisted.reduce((n, c) => n + c.updateIds.length, 0),
      writesInFlight: this.failure ? 0 : this.runningCount(),
      fatalError: this.failure,
    };
  }

  // ---- LDK callbacks (synchronous, inside LDK: never call back into LDK from here) ----

  private onNewChannel(outpoint: ldk.OutPoint, monitor: ldk.ChannelMonitor): ldk.ChannelMonitorUpdateStatus {
    const ch = this.channel(outpoint);
    const latest = monitor.get_latest_update_id();
    const tick = ++this.tick;
    ch.archived = false;
    this.noteAwaited(ch, latest);
    this.enqueue(ch, this.fullWrite(ch, monitor, latest, tick));
    return IN_PROGRESS;
  }

  private onUpdate(outpoint: ldk.OutPoint, update: ldk.ChannelMonitorUpdate | null, monitor: ldk.ChannelMonitor): ldk.ChannelMonitorUpdateStatus {
    const seenBefore = this.channels.has(monitorName(outpoint));
    const ch = this.channel(outpoint);
    if (update === null || isNullPointer(update)) {
      // Chain sync: the whole monitor must be stored. Once durable it also covers every update
      // id up to the monitor's latest. It contains those updates, so it waits for the manager
      // exactly as long as the newest of them would.
      const latest = monitor.get_latest_update_id();
      if (seenBefore && latest > ch.latestUpdateId && !ch.awaiting.includes(latest)) {
        // No update, yet a newer id: ChainMonitor could not apply an update (the funding was
        // already spent on chain) and hands over the whole monitor instead, but it still
        // awaits that update's id. Without this, the id would never be reported complete.
        const tick = ++this.tick;
        ch.updateTicks.set(latest, tick);
        this.noteAwaited(ch, latest);
      }
      this.enqueue(ch, this.fullWrite(ch, monitor, latest, ch.updateTicks.get(latest) ?? 0));
      return IN_PROGRESS;
    }
    const id = update.get_update_id();
    const tick = ++this.tick;
    ch.updateTicks.set(id, tick);
    this.noteAwaited(ch, id);
    if (id === LEGACY_CLOSED_CHANNEL_UPDATE_ID || id % this.maxPending === 0n) {
      this.enqueue(ch, this.fullWrite(ch, monitor, monitor.get_latest_update_id(), tick));
    } else {
      this.enqueue(ch, { kind: 'update', key: updateKey(id), bytes: update.write(), coversUpdateId: id, enqueuedAt: Date.now(), attempts: 0, gateTick: tick });
    }
    return IN_PROGRESS;
  }

  /** Records an update id LDK now waits for (and since when, for stall reports). */
  private noteAwaited(ch: ChannelState, id: bigint): void {
    ch.awaiting.push(id);
    if (!ch.handedAt.has(id)) ch.handedAt.set(id, Date.now());
  }

  private fullWrite(ch: ChannelState, monitor: ldk.ChannelMonitor, covers: bigint, gateTick: number): QueuedWrite {
    return { kind: 'full', key: ch.name, bytes: withSentinel(monitor.write()), coversUpdateId: covers, enqueuedAt: Date.now(), attempts: 0, gateTick };
  }

  private onArchive(outpoint: ldk.OutPoint): void {
    const ch = this.channel(outpoint);
    ch.archived = true;
    this.enqueue(ch, { kind: 'archive', key: ch.name, bytes: new Uint8Array(0), coversUpdateId: 0n, enqueuedAt: Date.now(), attempts: 0, gateTick: 0 });
  }

  // ---- ordering against the ChannelManager ----

  /**
   * Links the ChannelManager's writer (LdkEventLoop does this when given the persister).
   *
   * LDK force-closes a channel on restore if its monitor contains an update the stored
   * manager never heard of ("ChannelManager is stale"). A monitor update therefore must not
   * become durable before a manager that knows it (as in flight) is durable: after a crash
   * at any point, LDK then either never saw the update or replays it. Linked, every monitor
   * write waits until a manager serialized after the update was handed over is durable,
   * asking the writer for one if needed.
   */
  linkManagerWriter(writer: ManagerWriter, managerStore: AsyncKVStore = this.store): ManagerWriteTracker {
    const link = {};
    this.managerLink = link;
    this.managerWriter = writer;
    this.managerWriterStopped = false;
    this.batchStore = managerStore === this.store && supportsAtomicBatch(managerStore) ? managerStore : undefined;
    const durable = (tick: number): void => {
      if (tick <= this.managerDurableTick) return;
      this.managerDurableTick = tick;
      const ready = this.managerWaiters.filter((w) => w.tick <= tick);
      this.managerWaiters = this.managerWaiters.filter((w) => w.tick > tick);
      for (const w of ready) w.resolve('open');
    };
    // Writes held since an earlier writer stopped need a manager from this one.
    if (this.managerWaiters.length > 0) writer.requestPersist();
    return {
      tickNow: () => this.tick,
      durable,
      writerFailed: (err) => {
        if (this.closed || this.failure) return;
        this.fail(err, undefined, undefined, 'the linked ChannelManager writer stopped, so monitor writes waiting for a manager that knows them can never be sent');
      },
      writerStopped: () => {
        if (this.managerLink !== link) return;
        // The writes waiting for a manager stay held: sent, they would store an update no stored
        // manager knows (LDK force-closes such a channel on restore); reported, they would release
        // the channel without durability. A flush() must not wait for them any longer.
        this.managerWriterStopped = true;
        this.settleIdleWaiters();
      },
      writeManager: async (bytes, tick) => {
        if (this.batchStore) await this.writeManagerBatch(this.batchStore, bytes, tick);
        else await writeManagerBytes(bytes, managerStore);
        durable(tick);
      },
    };
  }

  /**
   * One atomic request: the manager serialized at `tick` plus every monitor write waiting
   * for it (its update was handed over at or before `tick`, so this manager knows it).
   * Either all of them are durable afterwards or none is.
   */
  private async writeManagerBatch(store: AtomicBatchKVStore, bytes: Uint8Array, tick: number): Promise<void> {
    const claimed: ManagerWaiter[] = [];
    const writes: KeyValueWrite[] = [
      { primaryNamespace: CHANNEL_MANAGER_NAMESPACE.primary, secondaryNamespace: CHANNEL_MANAGER_NAMESPACE.secondary, key: CHANNEL_MANAGER_NAMESPACE.key, value: bytes },
    ];
    // One request cannot write a key twice (the store refuses the whole batch, for good): a
    // second write of a key already in this batch (an update id LDK handed over again) waits,
    // and goes out on its own once this manager is durable.
    const keys = new Set<string>();
    for (const w of this.closed || this.failure ? [] : this.managerWaiters) {
      if (w.tick > tick || this.superseded(w.ch, w.write)) continue;
      const write = this.storeWrite(w.ch, w.write);
      const id = JSON.stringify([write.primaryNamespace, write.secondaryNamespace, write.key]);
      if (keys.has(id)) continue;
      keys.add(id);
      claimed.push(w);
      writes.push(write);
    }
    for (const w of claimed) w.inBatch = true;
    try {
      await store.writeBatch(writes);
    } catch (err) {
      for (const w of claimed) {
        w.inBatch = false;
        w.write.attempts++;
        w.write.lastError = err;
      }
      // close() waited for this batch: the writes it carried end unsent.
      if (this.closed) this.releaseManagerWaiters((w) => claimed.includes(w));
      // Monitor writes in a batch that cannot succeed stop the persister, as their own would.
      if (claimed.length > 0 && !this.isTransient(err)) this.fail(err, claimed[0].ch, claimed[0].write);
      throw err;
    }
    for (const w of claimed) {
      this.managerWaiters = this.managerWaiters.filter((x) => x !== w);
      w.resolve('batched');
    }
  }

  /** Resolves once a manager covering the write's tick is durable (undefined if unlinked or already so). */
  private managerCovering(ch: ChannelState, write: QueuedWrite): Promise<GateOutcome> | undefined {
    if (!this.managerWriter || write.gateTick <= this.managerDurableTick) return undefined;
    if (!this.managerWriterStopped) this.managerWriter.requestPersist();
    // Released by close() or a fatal error (see releaseManagerWaiters).
    return new Promise((resolve) => this.managerWaiters.push({ tick: write.gateTick, inBatch: false, ch, write, resolve }));
  }

  /**
   * Lets writes waiting for a manager write go (they then see the persister stopped and end
   * unsent). close() keeps those in a batch on the wire, whose outcome is still to come.
   */
  private releaseManagerWaiters(which: (w: ManagerWaiter) => boolean): void {
    const released = this.managerWaiters.filter(which);
    this.managerWaiters = this.managerWaiters.filter((w) => !which(w));
    for (const w of released) w.resolve('open');
  }

  // ---- queueing ----

  private channel(outpoint: ldk.OutPoint): ChannelState {
    const name = monitorName(outpoint);
    let ch = this.channels.get(name);
    if (!ch) {
      ch = {
        name,
        // The callback's OutPoint points into LDK memory valid only during the call.
        outpoint: outpoint.clone(),
        pending: [],
        running: new Set(),
        awaiting: [],
        storedUpdateIds: this.preStored.get(name)?.stored ?? new Set(),
        leftoverUpdateIds: this.preStored.get(name)?.leftover ?? new Set(),
        durableFullCovers: undefined,
        latestUpdateId: 0n,
        durableUpdateId: undefined,
        updateTicks: new Map(),
        handedAt: new Map(),
        stalledSince: undefined,
        archived: false,
      };
      this.preStored.delete(name);
      this.channels.set(name, ch);
    }
    return ch;
  }

  private enqueue(ch: ChannelState, write: QueuedWrite): void {
    if (write.kind !== 'archive' && write.coversUpdateId > ch.latestUpdateId) ch.latestUpdateId = write.coversUpdateId;
    if (this.closed || this.failure) {
      this.log.warn({ monitor: ch.name, kind: write.kind }, 'persister stopped: write not queued, the channel stays held');
      return;
    }
    if (write.kind === 'full') {
      // Queued writes (after the last queued archive) that this full monitor contains are
      // never sent; it completes their ids when durable.
      const barrier = ch.pending.map((w) => w.kind).lastIndexOf('archive');
      const kept: QueuedWrite[] = [];
      ch.pending.forEach((w, i) => {
        if (i > barrier && w.coversUpdateId <= write.coversUpdateId) write.enqueuedAt = Math.min(write.enqueuedAt, w.enqueuedAt);
        else kept.push(w);
      });
      ch.pending = kept;
    }
    ch.pending.push(write);
    this.schedule(ch);
  }

  /** Deltas of one channel in flight at once when linked to the manager writer. */
  private concurrencyLimit(): number {
    return this.options.maxConcurrentWritesPerChannel ?? 8;
  }

  /** Starts queued writes of a channel as far as the ordering rules allow. */
  private schedule(ch: ChannelState): void {
    while (ch.pending.length > 0 && !this.closed && !this.failure) {
      const next = ch.pending[0];
      const running = [...ch.running];
      if (next.kind === 'archive') {
        if (running.length > 0) return;
      } else if (running.some((w) => w.kind === 'archive')) {
        return;
      } else if (next.kind === 'full') {
        if (running.some((w) => w.kind === 'full')) return;
      } else if (!this.managerWriter && running.length > 0) {
        // Unlinked, the stored manager may not know an update, so nothing may re-issue it after
        // a crash: a delta must not land while the write before it (say, a full monitor that
        // replaced the previous delta) could still be lost, leaving a gap LDK's reader stops at.
        return;
      } else if (running.filter((w) => w.kind === 'update').length >= this.concurrencyLimit()) {
        return;
      }
      ch.pending.shift();
      this.start(ch, next);
    }
  }

  private start(ch: ChannelState, write: QueuedWrite): void {
    ch.running.add(write);
    this.performWithRetry(ch, write)
      .then((outcome) => {
        ch.running.delete(write);
        if (outcome === 'done' && this.failure) {
          // Fail closed: once persistence has stopped (another writer, a rolled-back server) an
          // acknowledgement from that server is not trusted, so nothing more is released to LDK,
          // not even a write that was on the wire and landed afterwards.
          this.log.info({ monitor: ch.name, kind: write.kind }, 'monitor write landed after persistence stopped; not reported to LDK, the channel stays held');
        } else if (outcome === 'done') {
          this.afterDurable(ch, write);
        }
        this.schedule(ch);
        this.checkStalls();
        this.settleIdleWaiters();
        for (const check of [...this.settledWaiters]) check();
      })
      // Only reachable if LDK itself throws while being told about a completion.
      .catch((err: unknown) => this.fail(err, ch, write));
  }

  /** A newer full monitor that contains this write is queued, in flight, or durable. */
  private superseded(ch: ChannelState, write: QueuedWrite): boolean {
    if (write.kind === 'archive') return false;
    if (write.kind === 'update' && ch.durableFullCovers !== undefined && ch.durableFullCovers >= write.coversUpdateId) return true;
    if (ch.pending.some((w) => w.kind === 'full' && w.coversUpdateId >= write.coversUpdateId)) return true;
    return write.kind === 'update' && [...ch.running].some((w) => w.kind === 'full' && w.coversUpdateId >= write.coversUpdateId);
  }

  private async performWithRetry(ch: ChannelState, write: QueuedWrite): Promise<'done' | 'superseded' | 'stopped'> {
    const gate = this.managerCovering(ch, write);
    if (gate) {
      write.waitingForManager = true;
      const how = await gate;
      write.waitingForManager = false;
      // Written together with the manager: durable already.
      if (how === 'batched') return 'done';
      if (this.closed || this.failure) return 'stopped';
    }
    if (this.superseded(ch, write)) return 'superseded';
    for (;;) {
      try {
        await this.perform(ch, write);
        return 'done';
      } catch (err) {
        write.attempts++;
        write.lastError = err;
        // Cut off by close() (a closed store, an aborted request): a shutdown, not a failure.
        if (this.closed) {
          this.log.info({ monitor: ch.name, kind: write.kind, cause: describeError(err) }, 'monitor write ended by close(); the channel stays held');
          return 'stopped';
        }
        // Already stopped by another write's error (reported once, as `fatal`): neither retried
        // nor reported again.
        if (this.failure) {
          this.log.warn({ monitor: ch.name, kind: write.kind, cause: describeError(err) }, 'monitor write failed after persistence had stopped; ignored');
          return 'stopped';
        }
        if (!this.isTransient(err)) {
          this.fail(err, ch, write);
          return 'stopped';
        }
        const delayMs = backoffDelay(write.attempts, this.options.backoff);
        this.stats.retries++;
        this.log.warn({ monitor: ch.name, kind: write.kind, attempt: write.attempts, delayMs: Math.round(delayMs), cause: describeError(err) }, 'monitor write failed, retrying');
        this.notify('retry', { monitorName: ch.name, attempt: write.attempts, delayMs, error: err });
        await sleep(delayMs, this.abort.signal);
        if (this.closed || this.failure) return 'stopped';
        if (this.superseded(ch, write)) return 'superseded';
      }
    }
  }

  private async perform(ch: ChannelState, write: QueuedWrite): Promise<void> {
    if (write.kind === 'archive') {
      await this.archive(ch);
      return;
    }
    const { primaryNamespace, secondaryNamespace, key, value } = this.storeWrite(ch, write);
    await this.store.write(primaryNamespace, secondaryNamespace, key, value);
  }

  /** Where a delta or full monitor goes in LDK's layout. */
  private storeWrite(ch: ChannelState, write: QueuedWrite): KeyValueWrite {
    return write.kind === 'update'
      ? { primaryNamespace: CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, secondaryNamespace: ch.name, key: write.key, value: write.bytes }
      : { primaryNamespace: CHANNEL_MONITOR_NAMESPACE.primary, secondaryNamespace: CHANNEL_MONITOR_NAMESPACE.secondary, key: write.key, value: write.bytes };
  }

  /** Copies the monitor (with its updates applied) to `archived_monitors`, then removes the live copy. */
  private async archive(ch: ChannelState): Promise<void> {
    let restored: Awaited<ReturnType<typeof readMonitorWithUpdates>>;
    try {
      restored = await readMonitorWithUpdates(this.store, ch.name, this.options);
    } catch (err) {
      if (!(err instanceof KeyNotFoundError) || !isLiveMonitorKey(err, ch.name)) throw err;
      // No live monitor: an earlier attempt got past removing it (the archived copy was written
      // first), or it was never stored. Either way only leftover deltas remain to remove;
      // retrying the read would fail forever.
      const archived = await this.store
        .read(ARCHIVED_CHANNEL_MONITOR_NAMESPACE.primary, ARCHIVED_CHANNEL_MONITOR_NAMESPACE.secondary, ch.name)
        .then(() => true, (readErr: unknown) => {
          if (readErr instanceof KeyNotFoundError) return false;
          throw readErr;
        });
      if (!archived) this.log.error({ monitor: ch.name }, 'archiving a channel monitor that is not in the store: nothing to archive');
      await this.removeDeltas(ch, await this.store.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, ch.name));
      return;
    }
    // LDK's MonitorUpdatingPersister archives the plain serialization, without the sentinel.
    const bytes = restored.monitor.write();
    await this.store.write(ARCHIVED_CHANNEL_MONITOR_NAMESPACE.primary, ARCHIVED_CHANNEL_MONITOR_NAMESPACE.secondary, ch.name, bytes);
    this.stats.bytesWritten += bytes.length;
    await this.store.remove(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, ch.name, false);
    const updates = [...restored.appliedUpdateIds, ...restored.staleUpdateIds, ...restored.orphanUpdateIds, ...ch.storedUpdateIds, ...ch.leftoverUpdateIds];
    await this.removeDeltas(ch, [...new Set(updates)].map(updateKey));
  }

  /** Removes a channel's stored deltas (lazily) once the channel is archived. */
  private async removeDeltas(ch: ChannelState, keys: readonly string[]): Promise<void> {
    await Promise.all(keys.map((key) => this.store.remove(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, ch.name, key, true)));
    this.stats.removals += keys.length;
    ch.storedUpdateIds.clear();
    ch.leftoverUpdateIds.clear();
  }

  private afterDurable(ch: ChannelState, write: QueuedWrite): void {
    const latencyMs = Date.now() - write.enqueuedAt;
    if (write.kind === 'archive') {
      this.log.info({ monitor: ch.name }, 'channel monitor archived');
      if (ch.archived && ch.pending.length === 0 && ch.running.size === 0) {
        this.channels.delete(ch.name);
        // The stall timer no longer sees this channel: end a stall it reported here.
        if (ch.stalledSince !== undefined) this.endStall(ch, Date.now());
      }
      this.notify('durable', { monitorName: ch.name, kind: 'archive', completedUpdateIds: [], coversUpdateId: 0n, bytes: 0, latencyMs, attempts: write.attempts + 1 });
      return;
    }
    this.stats.bytesWritten += write.bytes.length;
    let completed: bigint[];
    if (write.kind === 'update') {
      this.stats.updateWrites++;
      const id = write.coversUpdateId;
      ch.storedUpdateIds.add(id);
      // This run's write replaced what a previous run left under the id.
      ch.leftoverUpdateIds.delete(id);
      // Landed after a full monitor that contains it: already obsolete.
      if (ch.durableFullCovers !== undefined && id <= ch.durableFullCovers) this.removeObsoleteUpdates(ch, ch.durableFullCovers);
      completed = ch.awaiting.filter((a) => a === id);
    } else {
      this.stats.fullWrites++;
      if (ch.durableFullCovers === undefined || write.coversUpdateId > ch.durableFullCovers) ch.durableFullCovers = write.coversUpdateId;
      this.removeObsoleteUpdates(ch, write.coversUpdateId);
      // A full monitor contains every update up to its latest id, whether or not the deltas
      // of those updates were written.
      completed = ch.awaiting.filter((a) => a <= write.coversUpdateId);
    }
    ch.awaiting = ch.awaiting.filter((a) => !completed.includes(a));
    // The durable prefix: the newest full monitor plus the consecutive deltas after it.
    let prefix = ch.durableFullCovers ?? -1n;
    if (ch.durableUpdateId !== undefined && ch.durableUpdateId > prefix) prefix = ch.durableUpdateId;
    while (ch.storedUpdateIds.has(prefix + 1n)) prefix++;
    ch.durableUpdateId = prefix >= 0n ? prefix : undefined;
    for (const id of completed) {
      ch.updateTicks.delete(id);
      ch.handedAt.delete(id);
      this.reportCompleted(ch.outpoint, id);
    }
    this.stats.completedUpdates += completed.length;
    this.notify('durable', { monitorName: ch.name, kind: write.kind, completedUpdateIds: completed, coversUpdateId: write.coversUpdateId, bytes: write.bytes.length, latencyMs, attempts: write.attempts + 1 });
  }

  /** Deltas contained in a durable full monitor are dead weight: remove them lazily. */
  private removeObsoleteUpdates(ch: ChannelState, coveredUpTo: bigint): void {
    for (const id of [...ch.storedUpdateIds, ...ch.leftoverUpdateIds]) {
      if (id > coveredUpTo) continue;
      ch.storedUpdateIds.delete(id);
      ch.leftoverUpdateIds.delete(id);
      this.stats.removals++;
      this.store.remove(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, ch.name, updateKey(id), true).catch((err: unknown) => {
        // Harmless: a leftover delta older than the full monitor is skipped by every reader.
        this.log.debug({ monitor: ch.name, updateId: id.toString(), cause: describeError(err) }, 'could not remove an obsolete monitor update');
      });
    }
  }

  private reportCompleted(outpoint: ldk.OutPoint, updateId: bigint): void {
    if (!this.chainMonitor) {
      this.deferredCompletions.push([outpoint, updateId]);
      return;
    }
    const res = this.chainMonitor.channel_monitor_updated(outpoint, updateId);
    if (!res.is_ok()) {
      // The channel is unknown to the ChainMonitor (e.g. archived meanwhile); nothing is held.
      this.log.warn({ monitor: monitorName(outpoint), updateId: updateId.toString() }, 'channel_monitor_updated was refused');
    }
  }

  // ---- failure, stalls, idleness ----

  private fail(err: unknown, ch: ChannelState | undefined, write: QueuedWrite | undefined, why = 'this error is not retried'): void {
    if (this.failure) {
      // `fatal` goes out once, with the error that stopped persistence (`fatalError` keeps it).
      this.log.warn({ monitor: ch?.name, kind: write?.kind, cause: describeError(err) }, 'another error after monitor persistence had stopped; ignored');
      return;
    }
    const error = err instanceof Error ? err : new Error(String(err));
    this.failure = error;
    this.abort.abort();
    this.releaseManagerWaiters(() => true);
    clearInterval(this.stallTimer);
    this.log.error({ monitor: ch?.name, kind: write?.kind, cause: describeError(err) }, `monitor persistence stopped: ${why}; the node must shut down`);
    this.rejectWaiters(error);
    for (const check of [...this.settledWaiters]) check();
    this.notify('fatal', error);
  }

  private rejectWaiters(err: Error): void {
    for (const waiter of this.idleWaiters.splice(0)) waiter.reject(err);
  }

  /** Update ids LDK waits for, over all channels. */
  private awaitingCount(): number {
    let n = 0;
    for (const ch of this.channels.values()) n += ch.awaiting.length;
    return n;
  }

  private isIdle(): boolean {
    for (const ch of this.channels.values()) if (ch.pending.length > 0 || ch.running.size > 0) return false;
    return true;
  }

  /**
   * Since when a channel with writes queued or running has been waiting: its oldest write, or
   * the oldest update LDK still waits for if that is older (the write carrying it may be a full
   * monitor enqueued later). Undefined when nothing is queued or running.
   */
  private waitingSince(ch: ChannelState): number | undefined {
    let since: number | undefined;
    for (const w of [...ch.running, ...ch.pending]) if (since === undefined || w.enqueuedAt < since) since = w.enqueuedAt;
    if (since === undefined) return undefined;
    for (const id of ch.awaiting) {
      const at = ch.handedAt.get(id);
      if (at !== undefined && at < since) since = at;
    }
    return since;
  }

  private describe(ch: ChannelState, now: number): PendingWriteInfo {
    const since = this.waitingSince(ch);
    const running = [...ch.running];
    const failing = running.reduce<QueuedWrite | undefined>((worst, w) => (!worst || w.attempts > worst.attempts ? w : worst), undefined);
    return {
      monitorName: ch.name,
      awaitingUpdateIds: [...ch.awaiting],
      queuedWrites: ch.pending.length + ch.running.size,
      pendingMs: since === undefined ? 0 : now - since,
      attempts: failing?.attempts ?? 0,
      waitingForManager: running.some((w) => w.waitingForManager === true),
      lastError: failing?.lastError === undefined ? undefined : describeError(failing.lastError),
    };
  }

  private checkStalls(): void {
    const now = Date.now();
    for (const ch of this.channels.values()) {
      const since = this.waitingSince(ch);
      const pendingMs = since === undefined ? 0 : now - since;
      // Once stopped (close(), a fatal error) no new stall is reported, and a stall ends only
      // if LDK no longer waits for anything: writes ended unsent leave their updates owed.
      const stopped = this.closed || this.failure !== undefined;
      if (!stopped && since !== undefined && pendingMs >= this.stallThresholdMs && ch.stalledSince === undefined) {
        ch.stalledSince = since;
        const info = this.describe(ch, now);
        this.log.warn({ monitor: ch.name, pendingMs, attempts: info.attempts, lastError: info.lastError }, 'monitor write stalled: the channel is held until it is durable');
        this.notify('stalled', info);
      } else if (ch.stalledSince !== undefined && (since === undefined ? ch.awaiting.length === 0 : pendingMs < this.stallThresholdMs)) {
        this.endStall(ch, now);
      }
    }
  }

  private endStall(ch: ChannelState, now: number): void {
    if (ch.stalledSince === undefined) return;
    const stalledMs = now - ch.stalledSince;
    ch.stalledSince = undefined;
    this.log.info({ monitor: ch.name, stalledMs }, 'monitor writes durable again');
    this.notify('recovered', { monitorName: ch.name, pendingMs: stalledMs });
  }
}

/**
 * Refuses a `store` that is certainly not the one `persister` writes to, so a node's monitor
 * updates never go where its restore did not read (or where its manager is not written).
 * Certain only when both are `VssStore` objects: each one is a connection with its own store
 * id, server, keys and version tracking, so two different objects are never the one store a
 * node must use, even for the same store id (a stale instance from before a reconnect, a second
 * open). A wrapper around a VssStore, another AsyncKVStore, or stores of two different kinds
 * cannot be told apart from the same store, so they pass unchecked.
 */
export function checkPersisterStore(persister: VssPersister, store: AsyncKVStore, entryPoint: 'restoreNode' | 'LdkEventLoop'): void {
  const own = persister.monitorStore;
  if (own === store || !(own instanceof VssStore) || !(store instanceof VssStore)) return;
  const which =
    own.storeId === store.storeId
      ? `another VssStore object of the same store id "${store.storeId}" (a second or stale instance, e.g. one opened before a reconnect; it may even point at another server or use other keys)`
      : `VssStore "${own.storeId}"`;
  const consequence =
    entryPoint === 'restoreNode'
      ? `the restored node's monitor updates would go there, not to "${store.storeId}" where this restore reads, and the next restore from "${store.storeId}" would come back stale (LDK then force-closes channels or loses funds). Nothing was read or written`
      : `the ChannelManager would be written to "${store.storeId}" and the monitors elsewhere, so no single store would hold a consistent node to restore. Nothing was linked or written`;
  throw new StoreMismatchError(
    `${entryPoint} was given VssStore "${store.storeId}" as store, but its VssPersister writes to ${which}: ${consequence}. Build the VssPersister over the very VssStore object given as store`,
    store.storeId,
    own.storeId,
  );
}

/** Whether a missing key is the channel's live monitor (not one of its deltas vanishing mid-read). */
function isLiveMonitorKey(err: KeyNotFoundError, monitorName: string): boolean {
  return err.primaryNamespace === CHANNEL_MONITOR_NAMESPACE.primary && err.secondaryNamespace === CHANNEL_MONITOR_NAMESPACE.secondary && err.key === monitorName;
}
