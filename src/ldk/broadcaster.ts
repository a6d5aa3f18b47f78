/**
 * A BroadcasterInterface that lets a transaction leave only once a ChannelManager that knows
 * it was broadcast is durable.
 *
 * Why: LDK hands the funding transaction to the broadcaster the moment the first monitor write
 * completes, and only then marks the channel "funding broadcast" in the ChannelManager. A
 * crash after the broadcast and before the next manager write leaves a stored manager that
 * says the funding was never sent; once that transaction confirms, LDK 0.1.0 panics while
 * connecting blocks ("Funding transaction broadcast by the local client before it should
 * have") and the wallet cannot start. Holding the transaction until a manager serialized after
 * the broadcast call is durable removes that window: a crash before then leaves a manager and
 * a chain that agree (nothing was sent, and LDK sends it again after restore, when it
 * completes the monitor write it finds in flight).
 *
 * Claims and justice transactions from the monitors go through the same broadcaster. They
 * are held for at most `maxHoldMs`: a claim must not wait on an unreachable store, so after
 * that they leave anyway (and the window above is open again only if the device also crashes
 * before the store comes back). When the event loop stops or fails before the manager is
 * durable, held transactions are dropped, exactly as a crash would drop them; LDK rebroadcasts
 * what still matters after restart (monitors re-send their claims, the funding transaction
 * goes out when the in-flight first monitor write completes on restore).
 */
import * as ldk from 'lightningdevkit';
import { describeError, stderrLogger, type PersistenceLogger } from './log.js';
import { MAX_TIMER_MS } from './retry.js';

/** What the broadcaster needs from the ChannelManager's writer (LdkEventLoop provides it). */
export interface ManagerDurability {
  /**
   * Resolves once a ChannelManager serialized after this call is durable (asking for such a
   * write now); rejects if the writer stops or fails first.
   */
  managerDurable(): Promise<void>;
}

export interface ManagerOrderedBroadcasterOptions {
  /** Longest a transaction waits for the manager write before it leaves anyway. Default 60 s; at most 2^31 - 1 ms. */
  maxHoldMs?: number;
  log?: PersistenceLogger;
}

export interface ManagerOrderedBroadcasterStats {
  /** Transactions sent at once (no manager writer attached). */
  sentAtOnce: number;
  /** Transactions sent after the manager that knows them was durable. */
  sentAfterManager: number;
  /** Transactions sent because `maxHoldMs` passed first. */
  sentAfterTimeout: number;
  /** Transactions dropped because the writer stopped or failed first. */
  dropped: number;
}

export const DEFAULT_MAX_BROADCAST_HOLD_MS = 60_000;

export class ManagerOrderedBroadcaster {
  /** Give this to LDK (ChannelManager, ChainMonitor, monitors) in place of your broadcaster. */
  readonly broadcaster: ldk.BroadcasterInterface;
  readonly stats: ManagerOrderedBroadcasterStats = { sentAtOnce: 0, sentAfterManager: 0, sentAfterTimeout: 0, dropped: 0 };
  private writer: ManagerDurability | undefined;
  private heldCount = 0;
  private readonly maxHoldMs: number;
  private readonly log: PersistenceLogger;

  /** `send` is your real broadcaster: it receives the transactions once they may leave. */
  constructor(
    private readonly send: (txs: Uint8Array[]) => void,
    options: ManagerOrderedBroadcasterOptions = {},
  ) {
    // Checked now: called later from inside LDK, a non-function would only be logged, once per
    // broadcast, and no transaction would ever leave (e.g. an LDK BroadcasterInterface passed here).
    if (typeof send !== 'function') {
      throw new TypeError(`ManagerOrderedBroadcaster needs a function that sends transactions, got ${send === null ? 'null' : typeof send}`);
    }
    this.maxHoldMs = options.maxHoldMs ?? DEFAULT_MAX_BROADCAST_HOLD_MS;
    // Node runs a timer of NaN, Infinity or more than MAX_TIMER_MS after 1 ms: a hold meant to be
    // long (or endless) would let every transaction out before its manager, silently.
    if (!Number.isFinite(this.maxHoldMs) || this.maxHoldMs < 0 || this.maxHoldMs > MAX_TIMER_MS) {
      throw new RangeError(`maxHoldMs must be a number of milliseconds from 0 to ${MAX_TIMER_MS}, got ${this.maxHoldMs}`);
    }
    this.log = options.log ?? stderrLogger;
    this.broadcaster = ldk.BroadcasterInterface.new_impl({
      broadcast_transactions: (txs: Uint8Array[]) => this.broadcast(txs.map((tx) => Uint8Array.from(tx))),
    });
  }

  /**
   * Orders broadcasts after the manager writes of `writer` (LdkEventLoop attaches itself when
   * given this broadcaster). Until then transactions leave at once: nothing writes the manager.
   */
  attach(writer: ManagerDurability): void {
    this.writer = writer;
  }

  /** Transactions waiting for a manager write. */
  get held(): number {
    return this.heldCount;
  }

  private broadcast(txs: Uint8Array[]): void {
    const writer = this.writer;
    if (!writer) {
      this.stats.sentAtOnce += txs.length;
      this.deliver(txs);
      return;
    }
    this.heldCount += txs.length;
    let settled = false;
    const settle = (outcome: 'manager' | 'timeout' | 'dropped', cause?: unknown): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      this.heldCount -= txs.length;
      if (outcome === 'dropped') {
        this.stats.dropped += txs.length;
        this.report('warn', 'broadcast dropped: the ChannelManager writer stopped before the manager that knows it was durable; LDK sends it again after restart', () => ({
          transactions: txs.length,
          cause: describeError(cause),
        }));
        return;
      }
      if (outcome === 'timeout') {
        this.stats.sentAfterTimeout += txs.length;
        this.report('warn', 'broadcasting before the ChannelManager that knows it is durable: the store has not confirmed a manager write in time', () => ({
          transactions: txs.length,
          heldMs: this.maxHoldMs,
        }));
      } else {
        this.stats.sentAfterManager += txs.length;
      }
      this.deliver(txs);
    };
    const timer = setTimeout(() => settle('timeout'), this.maxHoldMs);
    // A process on its way out does not wait for it: exiting drops the transaction, as a crash would.
    (timer as unknown as { unref?: () => void }).unref?.();
    // Called from inside LDK: asking for a manager write only flags the writer; the write
    // itself starts on its next pass, outside this call.
    let durable: Promise<void>;
    try {
      durable = writer.managerDurable();
    } catch (err) {
      // A writer that throws instead of rejecting: the same as one that stopped, and the
      // exception must not unwind into LDK.
      durable = Promise.reject(err);
    }
    durable.then(
      () => settle('manager'),
      (err: unknown) => settle('dropped', err),
    );
  }

  private deliver(txs: Uint8Array[]): void {
    // The caller's broadcaster failing must not unwind into LDK (nor, for an async one, reject
    // unhandled and end the process); LDK rebroadcasts claims.
    const failed = (err: unknown): void => this.report('error', 'broadcaster threw', () => ({ transactions: txs.length, cause: describeError(err) }));
    try {
      // Typed as returning void, but an async function fits that type too.
      const result: unknown = this.send(txs);
      if (isThenable(result)) Promise.resolve(result).then(undefined, failed);
    } catch (err) {
      failed(err);
    }
  }

  /**
   * Logs, ignoring a logger (or an error to describe) that throws: this runs inside LDK
   * callbacks and timers, where an exception is fatal to LDK or to the process.
   */
  private report(level: 'warn' | 'error', message: string, fields: () => Record<string, unknown>): void {
    try {
      this.log[level](fields(), message);
    } catch {
      // Nowhere left to report it.
    }
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === 'object' || typeof value === 'function') && value !== null && typeof (value as { then?: unknown }).then === 'function';
}
