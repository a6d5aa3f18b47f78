/**
 * The event-processing loop of an LDK node with the ChannelManager persistence rule built in:
 * whenever `get_and_clear_needs_persistence()` says so, the manager is written and the write
 * must be durable before the application sees further events (payment outcomes excepted, see
 * `isDeliveredWithoutManagerWrite`). A restored manager is then never older than LDK tolerates
 * relative to its monitors (an old manager makes LDK force-close channels).
 *
 * `poll()` never blocks, so an app (or the harness) can drive it from its own pump (with
 * `timerTick()` for LDK's periodic calls); `start()` runs it by itself, woken by LDK's futures,
 * and makes LDK's periodic calls (`timers`) as LDK's BackgroundProcessor does.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore } from '../store/types.js';
import { LdkPanicError, PersisterStoppedError } from './errors.js';
import { describeError, stderrLogger, type PersistenceLogger } from './log.js';
import { StatusEmitter } from './status-emitter.js';
import { writeManagerBytes } from './manager.js';
import { MAX_TIMER_MS, backoffDelay, isTransientStoreError, sleep, validateBackoff, type BackoffOptions } from './retry.js';
import { checkPersisterStore, type ManagerWriteTracker, type VssPersister } from './persister.js';
import type { ManagerDurability, ManagerOrderedBroadcaster } from './broadcaster.js';

/**
 * Handles one LDK event, synchronously, inside LDK's event processing (calling
 * ChannelManager methods from here is allowed). Returning `false` (or throwing) asks LDK to
 * hand the event again later: that queue is offered again after the loop's `backoff` delay,
 * growing while the handler keeps refusing.
 */
export type LdkEventHandler = (event: ldk.Event) => void | boolean;

/**
 * LDK's periodic calls, which its Rust BackgroundProcessor makes and a wallet running this loop
 * instead would otherwise have to know to make. Each is the interval in milliseconds, or `false`
 * to leave that call to the app.
 */
export interface LdkTimerIntervals {
  /**
   * `ChannelManager.timer_tick_occurred()`, default 60 000 (LDK's FRESHNESS_TIMER). Without it
   * completed payments are never forgotten (LDK keeps each one for 7 ticks, so the manager,
   * written whole at every step, grows with every payment), channels whose peer is gone are
   * not disabled, fee updates are not sent and payments are not retried or abandoned.
   */
  channelManagerMs?: number | false;
  /** `PeerManager.timer_tick_occurred()` (pings, dropping dead peers), default 10 000 (PING_TIMER). Needs `peerManager`. */
  peerManagerMs?: number | false;
  /**
   * The OnionMessenger's `timer_tick_occurred()` (drops onion messages buffered for peers that
   * never connected), default 10 000 (ONION_MESSAGE_HANDLER_TIMER). Needs `onionMessenger`.
   */
  onionMessengerMs?: number | false;
  /** `ChainMonitor.rebroadcast_pending_claims()` (re-sends and fee-bumps claims of closed channels), default 30 000 (REBROADCAST_TIMER). */
  rebroadcastClaimsMs?: number | false;
}

/** One of LDK's periodic calls (see LdkTimerIntervals). */
type LdkTimer = 'channelManager' | 'peerManager' | 'onionMessenger' | 'rebroadcastClaims';

/** LDK BackgroundProcessor's intervals (lightning-background-processor 0.1). */
const DEFAULT_TIMER_MS: Readonly<Record<LdkTimer, number>> = {
  channelManager: 60_000,
  peerManager: 10_000,
  onionMessenger: 10_000,
  rebroadcastClaims: 30_000,
};

const TIMER_OPTION: Readonly<Record<LdkTimer, keyof LdkTimerIntervals>> = {
  channelManager: 'channelManagerMs',
  peerManager: 'peerManagerMs',
  onionMessenger: 'onionMessengerMs',
  rebroadcastClaims: 'rebroadcastClaimsMs',
};

/** The intervals of the timers that run, checked: a bad value is a RangeError at construction. */
function timerIntervals(timers: false | LdkTimerIntervals | undefined): Map<LdkTimer, number> {
  const intervals = new Map<LdkTimer, number>();
  if (timers === false) return intervals;
  if (timers !== undefined && (typeof timers !== 'object' || timers === null)) throw new RangeError(`timers must be false or an object of intervals, got ${String(timers)}`);
  for (const key of Object.keys(timers ?? {})) {
    // A misspelt key would silently leave that timer at its default.
    if (!Object.values(TIMER_OPTION).includes(key as keyof LdkTimerIntervals)) throw new RangeError(`timers.${key} is not a timer (known: ${Object.values(TIMER_OPTION).join(', ')})`);
  }
  for (const timer of Object.keys(DEFAULT_TIMER_MS) as LdkTimer[]) {
    const option = TIMER_OPTION[timer];
    const ms = timers?.[option] ?? DEFAULT_TIMER_MS[timer];
    if (ms === false) continue;
    // 0 or NaN would call LDK on every turn of the event loop; Node runs a timer past
    // MAX_TIMER_MS (or Infinity) after 1 ms.
    if (!(typeof ms === 'number' && ms >= 1 && ms <= MAX_TIMER_MS)) throw new RangeError(`timers.${option} must be false or a number of milliseconds from 1 to ${MAX_TIMER_MS}, got ${String(ms)}`);
    intervals.set(timer, ms);
  }
  return intervals;
}

export interface LdkEventLoopOptions {
  channelManager: ldk.ChannelManager;
  chainMonitor: ldk.ChainMonitor;
  /** Where the ChannelManager goes (`("", "", "manager")`). */
  store: AsyncKVStore;
  handleEvent: LdkEventHandler;
  /** If given, `process_events()` runs after each pass so queued messages go out, and its timer is ticked (`timers`). */
  peerManager?: ldk.PeerManager;
  /** If given (a node with a real OnionMessenger, e.g. for BOLT 12), its timer is ticked (`timers`). */
  onionMessenger?: ldk.OnionMessenger;
  /**
   * LDK's periodic calls, which `start()` makes at LDK's BackgroundProcessor intervals unless
   * this is `false` (the app makes them itself); see LdkTimerIntervals. An app that drives
   * `poll()` itself calls `timerTick()` instead. Bad intervals are a RangeError.
   */
  timers?: false | LdkTimerIntervals;
  /**
   * The node's VssPersister. Linking them orders monitor writes after the manager writes
   * that know about them, so a crash at any point never leaves a stored manager older than
   * its monitors (which LDK answers with a force-close). Strongly recommended. It must write to
   * `store`: two different `VssStore` objects are refused with `StoreMismatchError`.
   */
  persister?: VssPersister;
  backoff?: BackoffOptions;
  isTransient?: (err: unknown) => boolean;
  log?: PersistenceLogger;
  /**
   * How long a manager write LDK asked for may wait to be combined with later ones, as long
   * as nothing needs it: it is written at once when events are waiting for the app or a
   * monitor write waits for it (linked persister). 0 writes every request at once. Default
   * 250 ms. A crash loses at most this much manager progress, never its consistency with
   * the monitors (with a linked persister).
   */
  coalesceMs?: number;
  /**
   * The broadcaster given to LDK, if it is a ManagerOrderedBroadcaster: the loop attaches
   * itself so transactions leave only once a manager that knows them is durable. Strongly
   * recommended (see broadcaster.ts for the crash it prevents).
   */
  broadcaster?: ManagerOrderedBroadcaster;
}

export interface ManagerPersistedEvent {
  bytes: number;
  latencyMs: number;
  attempts: number;
}

export interface LdkEventLoopEvents {
  'manager-persisted': [ManagerPersistedEvent];
  /** The persister asked for a manager write (for apps that drive `poll()` themselves). */
  'persist-requested': [];
  retry: [{ attempt: number; delayMs: number; error: unknown }];
  fatal: [Error];
}

/**
 * How many newer manager writes waiting events may be held for in a row when the manager keeps
 * changing during each write (see `poll()`); then they go out with the last durable manager.
 */
export const MAX_REWRITES_FOR_EVENTS = 8;

/**
 * Events that go to the app at once, even while a manager write is owed or in flight.
 *
 * LDK holds a channel's revoke_and_ack monitor update until the app has handled the PaymentSent
 * (or PaymentForwarded) that the same commitment round produced. LDK 0.1.0 (and the 0.1.2-0
 * pre-release) mis-numbers monitor updates when such a held revoke_and_ack also frees HTLCs
 * waiting in the channel's holding cell, and a later release then panics the WASM module
 * ("Attempted to apply ChannelMonitorUpdates out of order"), taking every node of the process
 * down. Holding these events for the manager write made that window wide: with several
 * payments in flight and the manager not linked to the persister it panicked within a few
 * hundred payments (docs/ldk.md). Handing them out at once closes it.
 *
 * This is safe for these kinds: they report what is already settled in the monitors (the
 * preimage LDK learned, a fee earned), and if the node crashes before a manager that knows
 * they were handled is durable, LDK creates them again on restart (at-least-once delivery,
 * which handlers must tolerate anyway). The path events are informational (scoring) and go
 * out with them so that one of them at the head of LDK's queue cannot hold a PaymentSent back.
 */
export function isDeliveredWithoutManagerWrite(event: ldk.Event): boolean {
  return (
    event instanceof ldk.Event_PaymentSent ||
    event instanceof ldk.Event_PaymentForwarded ||
    event instanceof ldk.Event_PaymentPathSuccessful ||
    event instanceof ldk.Event_PaymentPathFailed
  );
}

/** LDK's two event queues: the ChainMonitor's and the ChannelManager's. */
type EventQueue = 'chain' | 'manager';

/** Refusals in a row by the app's handler for one queue, and when that queue may be offered again. */
interface ReplayBackoff {
  refusals: number;
  notBefore: number;
}

interface DurabilityWaiter {
  /** Satisfied by a write whose sequence number is above this. */
  after: number;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class LdkEventLoop extends StatusEmitter<LdkEventLoopEvents> implements ManagerDurability {
  private readonly cm: ldk.ChannelManager;
  protected readonly log: PersistenceLogger;
  private readonly isTransient: (err: unknown) => boolean;
  private readonly abort = new AbortController();
  private readonly handler: ldk.EventHandler;
  private inFlight: Promise<void> | undefined;
  private failure: Error | undefined;
  private stopped = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private readonly tracker: ManagerWriteTracker | undefined;
  /** A manager write was requested by the persister (LDK's own flag is checked as well). */
  private forced = false;
  /** When LDK asked for a manager write that has not been started yet. */
  private dirtySince: number | undefined;
  /** An event was handed back to LDK this pass because a manager write is owed first. */
  private eventWaiting = false;
  /**
   * The write that events waited for is durable: the next pass hands them out. (Handing an
   * event back makes LDK ask for persistence again; without this the two would loop.)
   */
  private deliverNext = false;
  private delivering = false;
  /** Writes made again in a row for the same waiting events (see MAX_REWRITES_FOR_EVENTS). */
  private rewritesInARow = 0;
  private readonly coalesceMs: number;
  /** Manager writes serialized so far (each gets the next number). */
  private writesSerialized = 0;
  private durabilityWaiters: DurabilityWaiter[] = [];
  /** The queue whose events are being offered now (the handler's refusals count against it). */
  private offering: EventQueue = 'manager';
  /**
   * An event the app refused is replayed by LDK on the very next pass. Offered again at once,
   * a handler that keeps refusing (its database is down, a bug) would spin: a ChainMonitor
   * event (SpendableOutputs, BumpTransaction) makes every pass "do work" without an await, so
   * `start()` would block the process for good; a ChannelManager event costs a manager write
   * per attempt. The queue waits out a backoff instead; the other queue carries on (a
   * PaymentSent must not wait behind a refused chain event, see isDeliveredWithoutManagerWrite).
   */
  private readonly replay: Record<EventQueue, ReplayBackoff> = { chain: { refusals: 0, notBefore: 0 }, manager: { refusals: 0, notBefore: 0 } };
  /** A callback is registered on LDK's future for this queue and has not been called yet. */
  private readonly armed: Record<EventQueue, boolean> = { chain: false, manager: false };
  /** LDK's periodic calls this loop makes, by interval (see LdkTimerIntervals). */
  private readonly timerMs: Map<LdkTimer, number>;
  /** When each timer last ran (performance.now(): wall-clock jumps must not skip or bunch ticks). */
  private readonly timerLastRun = new Map<LdkTimer, number>();
  /** The intervals `start()` set up, cleared by `stop()` and by a fatal error. */
  private intervals: ReturnType<typeof setInterval>[] = [];
  readonly stats = {
    managerWrites: 0,
    managerBytes: 0,
    eventsHandled: 0,
    retries: 0,
    /** Writes made again because the manager changed while the one events waited for was in flight. */
    rewritesForEvents: 0,
  };

  constructor(private readonly options: LdkEventLoopOptions) {
    super();
    this.cm = options.channelManager;
    this.log = options.log ?? stderrLogger;
    this.isTransient = options.isTransient ?? isTransientStoreError;
    this.coalesceMs = options.coalesceMs ?? 250;
    // NaN would make an owed write never due (and the loop wake every millisecond).
    if (!Number.isFinite(this.coalesceMs) || this.coalesceMs < 0) throw new RangeError(`coalesceMs must be a finite number >= 0, got ${this.coalesceMs}`);
    validateBackoff(options.backoff);
    this.timerMs = timerIntervals(options.timers);
    // Nothing to tick: timerTick() then reports no work for them.
    if (!options.peerManager) this.timerMs.delete('peerManager');
    if (!options.onionMessenger) this.timerMs.delete('onionMessenger');
    const created = performance.now();
    for (const timer of this.timerMs.keys()) this.timerLastRun.set(timer, created);
    // A closed or failed persister writes no monitor and reports nothing to LDK: linked, the
    // node would run with every channel held and only a log line saying why.
    const persisterFailure = options.persister?.fatalError;
    if (persisterFailure) {
      throw new PersisterStoppedError(`the VssPersister given to LdkEventLoop has stopped (${persisterFailure.name}: ${persisterFailure.message}): the node could never persist a monitor. Build a new VssPersister (and restore the node) once the cause is fixed`, {
        cause: persisterFailure,
      });
    }
    if (options.persister?.isClosed) {
      throw new PersisterStoppedError('the VssPersister given to LdkEventLoop was closed: the node could never persist a monitor and would hold every channel. Build a new VssPersister (and restore the node)');
    }
    // Manager and monitors in two different VssStores: no single store holds a node to restore.
    if (options.persister) checkPersisterStore(options.persister, options.store, 'LdkEventLoop');
    this.tracker = options.persister?.linkManagerWriter(
      {
        requestPersist: () => this.requestManagerWrite(),
      },
      options.store,
    );
    options.broadcaster?.attach(this);
    this.handler = ldk.EventHandler.new_impl({
      handle_event: (event: ldk.Event): ldk.Result_NoneReplayEventZ => {
        const managerNotDurable = this.dirtySince !== undefined || this.inFlight !== undefined;
        if (managerNotDurable && !this.delivering && !isDeliveredWithoutManagerWrite(event)) {
          // The manager LDK asked for is not durable yet: hand the event back (LDK replays it
          // on the next pass) and write the manager first (or let the write in flight finish).
          this.eventWaiting = true;
          return ldk.Result_NoneReplayEventZ.constructor_err(ldk.ReplayEvent.constructor_new());
        }
        this.stats.eventsHandled++;
        let handled: void | boolean;
        let threw: unknown;
        try {
          handled = this.options.handleEvent(event);
        } catch (err) {
          // Never let an exception unwind through WASM; replaying is the safe answer.
          threw = err;
          handled = false;
        }
        const replay = this.replay[this.offering];
        if (handled !== false) {
          replay.refusals = 0;
          return ldk.Result_NoneReplayEventZ.constructor_ok();
        }
        replay.refusals++;
        const delayMs = backoffDelay(replay.refusals, this.options.backoff);
        replay.notBefore = Date.now() + delayMs;
        const fields = { event: event.constructor.name, refusals: replay.refusals, retryInMs: Math.round(delayMs) };
        if (threw !== undefined) this.log.error({ ...fields, cause: describeError(threw) }, 'event handler threw; LDK will replay the event');
        else this.log.debug(fields, 'event handler asked for a replay');
        return ldk.Result_NoneReplayEventZ.constructor_err(ldk.ReplayEvent.constructor_new());
      },
    });
  }

  /** True while a manager write is in flight (events other than payment outcomes wait for it). */
  get persisting(): boolean {
    return this.inFlight !== undefined;
  }

  get fatalError(): Error | undefined {
    return this.failure;
  }

  /**
   * One non-blocking pass: while a manager write is in flight only payment outcomes go out
   * (`deliverPaymentOutcomes`); otherwise the manager write starts if one is owed and due
   * (requested by the persister, events waiting for it, or `coalesceMs` passed since LDK
   * asked); otherwise pending events go to the handler. Events never reach the app while a
   * write LDK asked for is not durable, payment outcomes excepted
   * (`isDeliveredWithoutManagerWrite`). Returns true if it did work.
   */
  poll(): boolean {
    if (this.failure || this.stopped) return false;
    try {
      return this.inFlight ? this.deliverPaymentOutcomes() : this.pass();
    } catch (err) {
      throw this.failOnPanic(err, 'processing events');
    }
  }

  /**
   * A trap in LDK's WebAssembly (a Rust panic) leaves the module unusable: the loop stops for
   * good with a typed error that says so, emitted as `fatal`. Other errors pass through as
   * they are.
   */
  private failOnPanic(err: unknown, during: string): unknown {
    if (!(err instanceof WebAssembly.RuntimeError)) return err;
    const failure = new LdkPanicError(
      `LDK panicked while ${during} (${err.message}; LDK's own message is on stderr): its WebAssembly state is unusable, so every node in this process must stop; restart and restore from the store`,
      { cause: err },
    );
    this.stopFor(failure);
    return failure;
  }

  /**
   * Stops the loop for good: waiters for a durable manager get `failure`, a linked persister
   * stops too (its monitor writes wait for manager writes that will not come), and `fatal` goes
   * out, once: a later failure (a write failing after a panic) is only logged, and the error the
   * app was given stays the one it was given.
   */
  private stopFor(failure: Error): void {
    if (this.failure) return;
    this.failure = failure;
    this.clearTimers();
    this.settleWaiters(undefined, failure);
    this.tracker?.writerFailed(failure);
    this.notify('fatal', failure);
  }

  /** The pass made when no manager write is in flight. */
  private pass(): boolean {
    if (this.cm.get_and_clear_needs_persistence()) this.dirtySince ??= Date.now();
    // Events waited for the write that just became durable. LDK's flag was cleared as that
    // manager was serialized, so a flag raised since (or a write the persister asked for)
    // means the manager changed after it: events queued meanwhile may be missing from what is
    // durable, so it is written again before any event goes out.
    // Under traffic that changes the manager during every write this could go on for good, so
    // after MAX_REWRITES_FOR_EVENTS newer writes in a row the events go out with the last
    // durable manager (what LDK's own ordering does every time: events first, then the write).
    const changedSinceWrite = this.forced || this.dirtySince !== undefined;
    const rewriteForEvents = this.deliverNext && changedSinceWrite && this.rewritesInARow < MAX_REWRITES_FOR_EVENTS;
    this.delivering = this.deliverNext && !rewriteForEvents;
    this.deliverNext = false;
    if (rewriteForEvents) {
      this.stats.rewritesForEvents++;
      this.rewritesInARow++;
      this.startWrite(true);
      return true;
    }
    if (this.delivering) {
      if (changedSinceWrite) {
        this.log.warn({ rewrites: this.rewritesInARow }, 'the ChannelManager changed during every write the waiting events were held for; handing them out now');
      }
      this.rewritesInARow = 0;
    }
    if (!this.delivering && (this.forced || (this.dirtySince !== undefined && Date.now() - this.dirtySince >= this.coalesceMs))) {
      this.startWrite();
      return true;
    }
    const before = this.stats.eventsHandled;
    this.eventWaiting = false;
    try {
      if (this.mayOffer('chain')) this.options.chainMonitor.as_EventsProvider().process_pending_events(this.handler);
      if (this.mayOffer('manager')) this.cm.as_EventsProvider().process_pending_events(this.handler);
    } finally {
      this.delivering = false;
    }
    this.options.peerManager?.process_events();
    // A handler's action (e.g. claim_funds) may have produced a monitor update that waits
    // for a manager write: start it now rather than on the next pass.
    if (this.eventWaiting || this.forced) {
      this.startWrite(this.eventWaiting);
      return true;
    }
    return this.stats.eventsHandled > before;
  }

  /**
   * The pass made while a manager write is in flight: only the events that must not wait for
   * it go out (`isDeliveredWithoutManagerWrite`), the rest are handed back for after the
   * write. LDK resumes a channel whose monitor update completed without this loop (the peer
   * handler's message processing does it), so a revoke_and_ack can come back from the peer
   * while a write is in flight; the PaymentSent of that round must have been handled by then.
   */
  private deliverPaymentOutcomes(): boolean {
    // Only when LDK's state changed since the write began (a PaymentSent comes with such a
    // change): events that were already waiting were handed back before, and handing them back
    // again would only make LDK ask for one more write.
    // A queue the app refused waits out its backoff; LDK's flag stays up for the next write.
    if (!this.mayOffer('manager') || !this.cm.get_and_clear_needs_persistence()) return false;
    this.dirtySince ??= Date.now();
    const before = this.stats.eventsHandled;
    this.cm.as_EventsProvider().process_pending_events(this.handler);
    // Handing the other events back raised LDK's flag again; the write owed for the change
    // above (after the one in flight) covers whatever this pass changed.
    this.cm.get_and_clear_needs_persistence();
    return this.stats.eventsHandled > before;
  }

  /** Selects `queue` for the handler unless the app refused its last event less than a backoff ago. */
  private mayOffer(queue: EventQueue): boolean {
    const replay = this.replay[queue];
    if (replay.refusals > 0 && Date.now() < replay.notBefore) return false;
    this.offering = queue;
    return true;
  }

  /** Milliseconds until a queue the app refused may be offered again (undefined if none is waiting). */
  private get replayDueInMs(): number | undefined {
    const now = Date.now();
    let due: number | undefined;
    for (const replay of Object.values(this.replay)) {
      if (replay.refusals > 0 && replay.notBefore > now) due = Math.min(due ?? Infinity, replay.notBefore - now);
    }
    return due;
  }

  /** True while a manager write is owed (LDK or the persister asked) or in flight, i.e. not yet durable. */
  get owesManagerWrite(): boolean {
    return this.forced || this.dirtySince !== undefined || this.inFlight !== undefined;
  }

  /** Milliseconds until a deferred manager write is due (undefined if none is owed). */
  get managerWriteDueInMs(): number | undefined {
    if (this.forced) return 0;
    return this.dirtySince === undefined ? undefined : Math.max(0, this.dirtySince + this.coalesceMs - Date.now());
  }

  /** Resolves when no manager write is in flight. */
  async idle(): Promise<void> {
    while (this.inFlight) await this.inFlight;
    if (this.failure) throw this.failure;
  }

  /**
   * Resolves once a ChannelManager serialized after this call is durable, and asks for that
   * write now; rejects if the loop stops or fails first. Safe to call from inside LDK
   * callbacks: it only flags the write, which starts on the next pass.
   */
  managerDurable(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.stopped) return Promise.reject(new PersisterStoppedError('event loop stopped'));
    return new Promise((resolve, reject) => {
      this.durabilityWaiters.push({ after: this.writesSerialized, resolve, reject });
      this.requestManagerWrite();
    });
  }

  /**
   * Flags a manager write for the next pass. Called from inside LDK callbacks, so listeners
   * hear of it only after the callback has returned: a listener that drives `poll()` would
   * otherwise re-enter the ChannelManager while LDK holds its locks (a WASM panic).
   */
  private requestManagerWrite(): void {
    this.forced = true;
    this.wake?.();
    queueMicrotask(() => this.notify('persist-requested'));
  }

  private settleWaiters(durableSeq: number | undefined, err?: Error): void {
    const waiting = this.durabilityWaiters;
    this.durabilityWaiters = [];
    for (const waiter of waiting) {
      if (err) waiter.reject(err);
      else if (durableSeq !== undefined && durableSeq > waiter.after) waiter.resolve();
      else this.durabilityWaiters.push(waiter);
    }
  }

  /** Persists the manager now if LDK asks for it, and waits until it is durable. */
  async persistIfNeeded(): Promise<void> {
    // Not `await this.idle()`: the loop (or the app) may start a write in the turn between that
    // promise settling and this code resuming, and a second write started next to it would
    // break the one-write-at-a-time order every other path relies on. Checked and started in
    // one synchronous step instead.
    while (this.inFlight) await this.inFlight;
    if (this.failure) throw this.failure;
    if (this.needsPersistence()) {
      this.startWrite();
      await this.idle();
    }
  }

  private needsPersistence(): boolean {
    // Always clear LDK's flag, even when a write was requested anyway.
    const ldkAsked = this.cm.get_and_clear_needs_persistence();
    return ldkAsked || this.forced || this.dirtySince !== undefined;
  }

  private startWrite(forEvents = false): void {
    this.forced = false;
    this.dirtySince = undefined;
    // persistWithRetry never rejects: failures are recorded in `failure`.
    this.inFlight = this.persistWithRetry(Date.now()).finally(() => {
      this.inFlight = undefined;
      if (forEvents && !this.failure) this.deliverNext = true;
      this.wake?.();
    });
  }

  /**
   * Runs the loop by itself until `stop()`, sleeping on LDK's futures when idle. Calling it
   * again while it runs does nothing; after `stop()` or a fatal error it throws (a stopped
   * loop has rejected its waiters and cannot be resumed: build a new LdkEventLoop).
   */
  start(): void {
    if (this.failure) throw this.failure;
    if (this.stopped) throw new PersisterStoppedError('event loop stopped: it cannot be started again (build a new LdkEventLoop)');
    if (this.running) return;
    this.startTimers();
    this.running = (async () => {
      while (!this.stopped && !this.failure) {
        let didWork: boolean;
        try {
          didWork = this.poll();
        } catch (err) {
          // A panic is already reported as `fatal`. Anything else would reject a promise nobody
          // awaits (an unhandled rejection) and leave the app's `fatal` listeners unaware: the
          // loop cannot go on past a pass that throws, so it stops the same way.
          if (!(err instanceof LdkPanicError)) this.failUnexpectedly(err);
          return;
        }
        if (didWork) continue;
        // During a write LDK may queue a payment outcome that must go out before it finishes.
        if (this.inFlight) await Promise.race([this.inFlight, this.waitForLdk(1_000)]);
        else await this.waitForLdk(Math.min(1_000, this.managerWriteDueInMs ?? 1_000, this.replayDueInMs ?? 1_000));
      }
    })();
  }

  private failUnexpectedly(err: unknown, during = 'processing events'): void {
    const failure = err instanceof Error ? err : new Error(String(err));
    this.log.error({ cause: describeError(failure) }, `event loop stopped: ${during} threw; the node must shut down`);
    this.stopFor(failure);
  }

  /**
   * Runs each of LDK's periodic calls (`timers`) whose interval has passed since it last ran,
   * for apps that drive `poll()` themselves: call it from the same pump, as often as you like
   * (e.g. every second), never from inside an LDK callback. `start()` makes these calls by
   * itself. Returns true if it ran any: call `poll()` then, as a tick may queue events or owe a
   * manager write. Like `poll()`, it does nothing after `stop()` or a fatal error, and a panic
   * in LDK stops the loop (`LdkPanicError`, thrown and emitted as `fatal`); other errors are
   * thrown as they are.
   */
  timerTick(): boolean {
    if (this.failure || this.stopped) return false;
    const now = performance.now();
    let ran = false;
    for (const [timer, ms] of this.timerMs) {
      if (now - (this.timerLastRun.get(timer) ?? now) < ms) continue;
      ran = true;
      this.runTimer(timer);
      // The app may have stopped the loop from a callback LDK made during the tick: no further
      // LDK call then.
      if (this.failure || this.stopped) break;
    }
    return ran;
  }

  /** One of LDK's periodic calls; a panic stops the loop (LdkPanicError, thrown). */
  private runTimer(timer: LdkTimer): void {
    // Counted as run before the call: a call that throws is not repeated on the app's next tick.
    this.timerLastRun.set(timer, performance.now());
    try {
      switch (timer) {
        case 'channelManager':
          this.channelManagerTick();
          break;
        case 'peerManager':
          this.options.peerManager?.timer_tick_occurred();
          break;
        case 'onionMessenger':
          this.options.onionMessenger?.as_OnionMessageHandler().timer_tick_occurred();
          break;
        case 'rebroadcastClaims':
          this.options.chainMonitor.rebroadcast_pending_claims();
          break;
      }
    } catch (err) {
      throw this.failOnPanic(err, `running LDK's ${timer} timer`);
    }
  }

  /**
   * `ChannelManager.timer_tick_occurred()`. LDK raises its persistence flag when the tick
   * changed a channel (the loop then writes as for any request), but not when it only forgot
   * completed payments: the manager stored then keeps them (and its size) until something else
   * is written, in an idle wallet for good. A write is owed for that too, coalesced like LDK's.
   */
  private channelManagerTick(): void {
    const recentBefore = this.cm.list_recent_payments().length;
    this.cm.timer_tick_occurred();
    if (this.cm.list_recent_payments().length < recentBefore) this.dirtySince ??= Date.now();
    // The running loop may be asleep for up to a second; the write (or the events the tick
    // queued) should not wait for that.
    this.wake?.();
  }

  /** `start()`'s intervals: one per timer, unref'd (a running node does not keep a process alive by its timers alone). */
  private startTimers(): void {
    for (const [timer, ms] of this.timerMs) {
      const interval = setInterval(() => {
        if (this.failure || this.stopped) return;
        try {
          this.runTimer(timer);
        } catch (err) {
          // A panic is already reported as `fatal`. Anything else thrown from a timer callback
          // would be an uncaught exception (the process exits); it stops the loop as a pass
          // that throws does.
          if (!(err instanceof LdkPanicError)) this.failUnexpectedly(err, `LDK's ${timer} timer`);
        }
      }, ms);
      interval.unref?.();
      this.intervals.push(interval);
    }
  }

  private clearTimers(): void {
    for (const interval of this.intervals) clearInterval(interval);
    this.intervals = [];
  }

  /**
   * Stops the loop and retries; a manager write in flight is awaited (its outcome is not). A
   * linked persister is told that no further manager write will come: monitor writes waiting
   * for one stay unsent (and unreported to LDK), and its `flush()` rejects instead of waiting.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.clearTimers();
    this.abort.abort();
    this.wake?.();
    await this.running;
    await this.inFlight;
    this.settleWaiters(undefined, this.failure ?? new PersisterStoppedError('event loop stopped before the manager was durable'));
    this.tracker?.writerStopped();
  }

  private waitForLdk(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      let done = false;
      const finish = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(finish, timeoutMs);
      this.wake = finish;
      this.armFuture('manager');
      this.armFuture('chain');
    });
  }

  /**
   * Registers a callback on LDK's future for `queue` unless one is still pending there. LDK
   * keeps every callback registered on a future until the future completes: a new one on each
   * idle wait (every second) piled up for as long as LDK had nothing to report (hours on a node
   * not fed blocks). The callback wakes whichever wait is current.
   */
  private armFuture(queue: EventQueue): void {
    if (this.armed[queue]) return;
    this.armed[queue] = true;
    const callback = ldk.FutureCallback.new_impl({
      // May fire synchronously inside LDK: it only wakes the loop, on a microtask.
      call: () =>
        queueMicrotask(() => {
          this.armed[queue] = false;
          this.wake?.();
        }),
    });
    const future = queue === 'manager' ? this.cm.get_event_or_persistence_needed_future() : this.options.chainMonitor.get_update_future();
    future.register_callback_fn(callback);
  }

  private async persistWithRetry(started: number): Promise<void> {
    // Serialize now: this is the state LDK asked to persist, and it knows every monitor
    // update handed to the persister up to this tick.
    const tick = this.tracker?.tickNow();
    const seq = ++this.writesSerialized;
    // Clear LDK's flag as the manager is serialized: whatever raised it so far (an event handed
    // back included) is in these bytes, so a flag raised later means a newer state.
    let bytes: Uint8Array;
    try {
      this.cm.get_and_clear_needs_persistence();
      bytes = this.cm.write();
    } catch (err) {
      // persistWithRetry never rejects: a panic is recorded (and emitted) like any failure.
      const failure = this.failOnPanic(err, 'serializing the ChannelManager');
      if (failure instanceof LdkPanicError) return;
      throw failure;
    }
    for (let attempt = 1; ; attempt++) {
      if (this.stopped) {
        this.failure ??= new PersisterStoppedError('event loop stopped before the manager was durable');
        this.settleWaiters(undefined, this.failure);
        return;
      }
      try {
        // Linked: the persister writes it, with the monitor writes waiting for it when it can.
        if (this.tracker && tick !== undefined) await this.tracker.writeManager(bytes, tick);
        else await writeManagerBytes(bytes, this.options.store);
        this.stats.managerWrites++;
        this.stats.managerBytes += bytes.length;
        this.settleWaiters(seq);
        this.notify('manager-persisted', { bytes: bytes.length, latencyMs: Date.now() - started, attempts: attempt });
        return;
      } catch (err) {
        if (!this.isTransient(err)) {
          this.log.error({ cause: describeError(err) }, 'ChannelManager persistence stopped: this error is not retried; the node must shut down');
          this.stopFor(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        const delayMs = backoffDelay(attempt, this.options.backoff);
        this.stats.retries++;
        this.log.warn({ attempt, delayMs: Math.round(delayMs), cause: describeError(err) }, 'ChannelManager write failed, retrying');
        this.notify('retry', { attempt, delayMs, error: err });
        await sleep(delayMs, this.abort.signal);
      }
    }
  }
}
