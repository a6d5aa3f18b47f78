/**
 * Reading ChannelMonitors back from a store in LDK's MonitorUpdatingPersister layout: a full
 * monitor plus the consecutive updates after it. Reads run in parallel (a listing tells us
 * which update keys exist, so there is no probe-until-NotFound round trip per update);
 * updates are then applied in order, exactly as LDK's own reader would.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore } from '../store/types.js';
import { StoreIOError } from '../store/errors.js';
import { CorruptStateError } from './errors.js';
import {
  CHANNEL_MONITOR_NAMESPACE,
  CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE,
  monitorName,
  parseUpdateKey,
  updateKey,
  withoutSentinel,
} from './layout.js';
import { createLimiter, type Limiter } from './concurrency.js';
import { isNullPointer } from './pointers.js';

/** The LDK objects needed to deserialize a monitor and replay updates onto it. */
export interface MonitorReadContext {
  entropySource: ldk.EntropySource;
  signerProvider: ldk.SignerProvider;
  broadcaster: ldk.BroadcasterInterface;
  feeEstimator: ldk.FeeEstimator;
  logger: ldk.Logger;
}

export interface RestoredMonitor {
  /** LDK's monitor name, `<funding txid>_<index>`. */
  name: string;
  monitor: ldk.ChannelMonitor;
  /** Hash of the best block the monitor had seen when written (internal byte order). */
  blockHash: Uint8Array;
  /** Update ids replayed on top of the stored full monitor, in order. */
  appliedUpdateIds: bigint[];
  /** Stored update ids already contained in the full monitor (safe to delete). */
  staleUpdateIds: bigint[];
  /**
   * Stored update ids after a gap: LDK's reader stops at the first missing id, so these are
   * never applied (they can only appear if a store lost writes).
   */
  orphanUpdateIds: bigint[];
  /** Bytes read for this monitor (full monitor + applied updates). */
  bytesRead: number;
}

export interface ReadMonitorsOptions {
  /** Parallel store requests. Default 16. */
  concurrency?: number;
  /** A limiter shared with other reads (overrides `concurrency`). */
  limiter?: Limiter;
}

function decodeMonitor(name: string, stored: Uint8Array, ctx: MonitorReadContext): { monitor: ldk.ChannelMonitor; blockHash: Uint8Array } {
  const parsed = ldk.UtilMethods.constructor_C2Tuple_ThirtyTwoBytesChannelMonitorZ_read(withoutSentinel(stored), ctx.entropySource, ctx.signerProvider);
  if (!(parsed instanceof ldk.Result_C2Tuple_ThirtyTwoBytesChannelMonitorZDecodeErrorZ_OK)) {
    const reason = parsed instanceof ldk.Result_C2Tuple_ThirtyTwoBytesChannelMonitorZDecodeErrorZ_Err ? parsed.err.constructor.name : 'unknown';
    throw new CorruptStateError(`monitor ${name} does not decode (${reason})`, CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, name);
  }
  const monitor = parsed.res.get_b();
  const actual = monitorName(monitor.get_funding_txo().get_a());
  if (actual !== name) {
    // LDK refuses this too: a monitor stored under another channel's name is not ours to load.
    throw new CorruptStateError(`monitor stored as ${name} belongs to ${actual}`, CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, name);
  }
  return { monitor, blockHash: parsed.res.get_a() };
}

/** A channel id in hex, or undefined for LDK's "None" (a null pointer or all zeros). */
function channelIdHex(channelId: ldk.ChannelId): string | undefined {
  if (isNullPointer(channelId)) return undefined;
  const bytes = channelId.get_a();
  return bytes.every((b) => b === 0) ? undefined : Buffer.from(bytes).toString('hex');
}

/** Splits the listed update ids into stale (≤ latest), the consecutive run after latest, and orphans. */
export function classifyUpdateIds(latest: bigint, listedKeys: string[]): { stale: bigint[]; consecutive: bigint[]; orphans: bigint[] } {
  const ids = listedKeys.map(parseUpdateKey).filter((id): id is bigint => id !== undefined);
  ids.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const stale = ids.filter((id) => id <= latest);
  const consecutive: bigint[] = [];
  const orphans: bigint[] = [];
  let expected = latest + 1n;
  for (const id of ids) {
    if (id <= latest) continue;
    if (orphans.length === 0 && id === expected) {
      consecutive.push(id);
      expected += 1n;
    } else {
      orphans.push(id);
    }
  }
  return { stale, consecutive, orphans };
}

/** Reads one monitor and applies its stored updates. */
export async function readMonitorWithUpdates(store: AsyncKVStore, name: string, ctx: MonitorReadContext, options: ReadMonitorsOptions = {}): Promise<RestoredMonitor> {
  const limit = options.limiter ?? createLimiter(options.concurrency ?? 16);
  const [stored, updateKeys] = await Promise.all([
    limit(() => store.read(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary, name)),
    limit(() => store.list(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name)),
  ]);
  const { monitor, blockHash } = decodeMonitor(name, stored, ctx);
  const { stale, consecutive, orphans } = classifyUpdateIds(monitor.get_latest_update_id(), updateKeys);
  const updateBytes = await Promise.all(consecutive.map((id) => limit(() => store.read(CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name, updateKey(id)))));
  let bytesRead = stored.length;
  consecutive.forEach((id, i) => {
    const bytes = updateBytes[i];
    bytesRead += bytes.length;
    const update = ldk.ChannelMonitorUpdate.constructor_read(bytes);
    if (!(update instanceof ldk.Result_ChannelMonitorUpdateDecodeErrorZ_OK)) {
      throw new CorruptStateError(`monitor update ${name}/${id} does not decode`, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name, updateKey(id));
    }
    if (update.res.get_update_id() !== id) {
      throw new CorruptStateError(`monitor update stored as ${name}/${id} carries id ${update.res.get_update_id()}`, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name, updateKey(id));
    }
    // LDK's update_monitor does not check which channel an update is for: another channel's
    // update with the right id applies "successfully", and the corrupted monitor then makes LDK
    // force-close the channel on start. Updates carry their channel id (LDK 0.0.121 and later).
    const updateChannel = channelIdHex(update.res.get_channel_id());
    const monitorChannel = channelIdHex(monitor.channel_id());
    if (updateChannel !== undefined && updateChannel !== monitorChannel) {
      throw new CorruptStateError(
        `monitor update stored as ${name}/${id} belongs to channel ${updateChannel}, not to this monitor's channel ${monitorChannel ?? '(unknown)'}`,
        CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE,
        name,
        updateKey(id),
      );
    }
    const applied = monitor.update_monitor(update.res, ctx.broadcaster, ctx.feeEstimator, ctx.logger);
    if (!applied.is_ok()) {
      throw new CorruptStateError(`monitor update ${name}/${id} does not apply to the stored monitor`, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE, name, updateKey(id));
    }
  });
  return { name, monitor, blockHash, appliedUpdateIds: consecutive, staleUpdateIds: stale, orphanUpdateIds: orphans, bytesRead };
}

/** Reads every monitor in the store (in parallel), each with its updates applied. */
export async function readChannelMonitors(store: AsyncKVStore, ctx: MonitorReadContext, options: ReadMonitorsOptions = {}): Promise<RestoredMonitor[]> {
  const limiter = options.limiter ?? createLimiter(options.concurrency ?? 16);
  const names = await limiter(() => store.list(CHANNEL_MONITOR_NAMESPACE.primary, CHANNEL_MONITOR_NAMESPACE.secondary));
  names.sort();
  return Promise.all(names.map((name) => readMonitorWithUpdates(store, name, ctx, { limiter })));
}

/**
 * IOError kinds that only the store's transport produces (the KVStore bridge maps timeouts,
 * closed stores, failed requests, refused credentials and network failures to them); LDK's own
 * decode and apply failures are `InvalidData` or `Other`.
 */
const UNREACHABLE_STORE_KINDS = new Set<ldk.IOError>([
  ldk.IOError.LDKIOError_TimedOut,
  ldk.IOError.LDKIOError_PermissionDenied,
  ldk.IOError.LDKIOError_NotConnected,
  ldk.IOError.LDKIOError_ConnectionRefused,
  ldk.IOError.LDKIOError_ConnectionReset,
  ldk.IOError.LDKIOError_ConnectionAborted,
  ldk.IOError.LDKIOError_BrokenPipe,
  ldk.IOError.LDKIOError_Interrupted,
  ldk.IOError.LDKIOError_WouldBlock,
]);

/**
 * Reads monitors with LDK's own MonitorUpdatingPersister (over a sync KVStore). Useful to
 * check compatibility, or for stores written by LDK's persister. A store that cannot be reached
 * is a `StoreIOError` (retry later), never a `CorruptStateError`: the stored data may be fine.
 */
export function readChannelMonitorsWithLdk(persister: ldk.MonitorUpdatingPersister): RestoredMonitor[] {
  const res = persister.read_all_channel_monitors_with_updates();
  if (!(res instanceof ldk.Result_CVec_C2Tuple_ThirtyTwoBytesChannelMonitorZZIOErrorZ_OK)) {
    const err = res instanceof ldk.Result_CVec_C2Tuple_ThirtyTwoBytesChannelMonitorZZIOErrorZ_Err ? res.err : undefined;
    const kind = err === undefined ? 'unknown' : ldk.IOError[err];
    if (err !== undefined && UNREACHABLE_STORE_KINDS.has(err)) {
      throw new StoreIOError(`LDK's MonitorUpdatingPersister could not reach or use the store while reading the monitors (${kind}); nothing was read, the stored data may be intact`);
    }
    throw new CorruptStateError(`LDK's MonitorUpdatingPersister could not read the monitors (${kind})`, CHANNEL_MONITOR_NAMESPACE.primary, '', '');
  }
  return res.res.map((entry) => {
    const monitor = entry.get_b();
    return {
      name: monitorName(monitor.get_funding_txo().get_a()),
      monitor,
      blockHash: entry.get_a(),
      appliedUpdateIds: [],
      staleUpdateIds: [],
      orphanUpdateIds: [],
      bytesRead: 0,
    };
  });
}
