/**
 * Rebuilding a node (ChainMonitor + ChannelManager) from a store alone. It fails closed:
 * every way the stored state could be incomplete or inconsistent is a typed error, never a
 * node that starts empty. Monitors, their updates and the manager are read in parallel.
 */
import * as ldk from 'lightningdevkit';
import type { AsyncKVStore } from '../store/types.js';
import { CorruptStateError, MissingChannelManagerError, MissingMonitorError, NothingToRestoreError, PersisterStoppedError, StaleChannelManagerError, StaleMonitorError, type StaleManagerChannel } from './errors.js';
import { ARCHIVED_CHANNEL_MONITOR_NAMESPACE, CHANNEL_MANAGER_NAMESPACE, CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE } from './layout.js';
import type { Limiter } from './concurrency.js';
import { silentLogger, stderrLogger, type PersistenceLogger } from './log.js';
import { readManagerBytes } from './manager.js';
import { readChannelMonitors, type RestoredMonitor } from './monitors.js';
import { checkPersisterStore, VssPersister } from './persister.js';
import { createLimiter } from './concurrency.js';

export interface RestoreNodeOptions {
  store: AsyncKVStore;
  entropySource: ldk.EntropySource;
  nodeSigner: ldk.NodeSigner;
  signerProvider: ldk.SignerProvider;
  feeEstimator: ldk.FeeEstimator;
  broadcaster: ldk.BroadcasterInterface;
  /**
   * LDK's log sink. Prefer the JavaScript implementation (`{ log(record) }`) to an `ldk.Logger`:
   * LDK explains why a manager does not load (or that it is about to force-close a channel) only
   * through its log, and only a JavaScript logger can be wrapped to read it. With an opaque
   * `ldk.Logger` the manager is read twice (once with a capturing logger of restore's own).
   */
  logger: ldk.LoggerInterface | ldk.Logger;
  router: ldk.Router;
  messageRouter: ldk.MessageRouter;
  config: ldk.UserConfig;
  /**
   * Persistence of the rebuilt ChainMonitor: a VssPersister (attached automatically, and told
   * which stored deltas exist so it can clean them up) or any LDK Persist. A VssPersister must
   * write to `store` itself: when both are `VssStore` objects and not the same one, restore
   * refuses with `StoreMismatchError` before reading anything. Wrappers, other stores and a
   * plain LDK Persist cannot be checked; they must write where `store` reads.
   */
  persister: VssPersister | ldk.Persist;
  filter?: ldk.Filter;
  /**
   * Reads the monitors instead of the built-in parallel reader (e.g. with LDK's
   * MonitorUpdatingPersister via `readChannelMonitorsWithLdk`).
   */
  readMonitors?: () => Promise<RestoredMonitor[]> | RestoredMonitor[];
  /**
   * Called after the manager is rebuilt and before the monitors are handed to the
   * ChainMonitor: the place to replay blocks the node missed (to the manager and to each
   * monitor from its own best block).
   */
  beforeWatch?: (node: { channelManager: ldk.ChannelManager; monitors: RestoredMonitor[] }) => void | Promise<void>;
  /** Parallel store requests. Default 16. */
  concurrency?: number;
  /**
   * A stored ChannelManager older than a channel's monitor makes LDK force-close that channel
   * (and broadcast its commitment transaction) as soon as the node runs. By default restore
   * refuses with `StaleChannelManagerError` naming the channels; `true` accepts the force-close
   * (LDK's own behaviour), e.g. once no newer manager can be found; a list of channel ids (hex)
   * accepts it for those channels only. The same applies to channels the manager does not know
   * when `refuseChannelsUnknownToManager` is set.
   */
  forceCloseStaleChannels?: boolean | readonly string[];
  /**
   * A monitor of a channel the stored manager does not know, which still sees the channel open
   * after `beforeWatch`, also makes LDK force-close it once the node runs. That is either a
   * manager written before the channel was opened (stale: the channel is lost to a force-close),
   * or, far more often, a channel closed cooperatively whose closing transaction the monitor
   * has not seen confirm yet (LDK 0.1 cannot tell them apart; the commitment transaction it
   * broadcasts then competes with the closing transaction). By default restore goes on, logs a
   * warning and lists such channels in `RestoredNode.channelsUnknownToManager`, so an app that
   * did not close them can drop the node before running it; `true` refuses them with
   * `StaleChannelManagerError` (`reason: 'unknown'`) unless `forceCloseStaleChannels` accepts them.
   */
  refuseChannelsUnknownToManager?: boolean;
  /** Where problems are reported (the errors thrown carry the same information). */
  log?: PersistenceLogger;
}

export interface RestoredNode {
  channelManager: ldk.ChannelManager;
  chainMonitor: ldk.ChainMonitor;
  monitors: RestoredMonitor[];
  /** Best block of the restored manager (internal byte order). */
  managerBlockHash: Uint8Array;
  stats: { monitors: number; updatesApplied: number; bytesRead: number; durationMs: number };
  /**
   * Channels the stored manager does not know whose monitor still sees them open (see
   * `refuseChannelsUnknownToManager`): LDK force-closes them, broadcasting their latest
   * commitment transaction, once the node runs. Empty in the common case.
   */
  channelsUnknownToManager: StaleManagerChannel[];
}

/**
 * A logger handed to the ChannelManager reader. LDK reports *why* a manager does not load (and
 * which channels it is about to force-close) only through its log, so errors logged during the
 * read are captured to pick the right typed error, and passed on to `inner` if given. The
 * manager keeps this logger for its lifetime; afterwards it only forwards.
 */
class CapturingLogger {
  private capturing = true;
  readonly errors: string[] = [];
  /** Channels LDK queued a force-close for because the manager does not know them (logged at info level). */
  readonly forceClosesQueued = new Set<string>();
  readonly ldkLogger: ldk.Logger;

  constructor(inner?: ldk.LoggerInterface) {
    this.ldkLogger = ldk.Logger.new_impl({
      log: (record: ldk.Record) => {
        if (this.capturing) {
          if (record.get_level() === ldk.Level.LDKLevel_Error) this.errors.push(record.get_args());
          const queued = FORCE_CLOSE_QUEUED.exec(record.get_args());
          if (queued) this.forceClosesQueued.add(queued[1]);
        }
        inner?.log(record);
      },
    });
  }

  stop(): void {
    this.capturing = false;
    this.errors.length = 0;
  }
}

/**
 * LDK's words (info level) when the manager read does not know the channel of a monitor it was
 * given: it queues a force-close of that channel, applied (and the latest commitment
 * transaction broadcast) once the node runs. LDK 0.1 does so for a monitor that still sees its
 * channel open or was closed cooperatively, not for one closed by a ChannelForceClosed update.
 */
const FORCE_CLOSE_QUEUED = /Queueing monitor update to ensure missing channel ([0-9a-f]{64}) is force closed/;

function channelIdFromLog(errors: string[]): string | undefined {
  for (const line of errors) {
    const match = /Missing ChannelMonitor for channel ([0-9a-f]{64})/.exec(line);
    if (match) return match[1];
  }
  return undefined;
}

/** LDK's words when the stored manager is older than a monitor (it then force-closes the channel). */
const STALE_MANAGER = 'A ChannelManager is stale compared to the current ChannelMonitor';

/** The channels LDK named while reporting a stale manager (its log lines that follow the first). */
function staleChannelsFromLog(errors: readonly string[], monitors: readonly RestoredMonitor[]): StaleManagerChannel[] {
  const byChannelId = new Map(monitors.map((m) => [hexOf(m.monitor.channel_id().get_a()), m.name]));
  const channels = new Map<string, StaleManagerChannel>();
  for (const line of errors) {
    const named = /The ChannelMonitor for channel ([0-9a-f]{64}) is at /.exec(line);
    if (!named) continue;
    const channelId = named[1];
    const entry = channels.get(channelId) ?? { reason: 'outdated' as const, channelId, monitorName: byChannelId.get(channelId), monitorUpdateId: undefined, managerUpdateId: undefined };
    const ids = /is at update_id (\d+) but the ChannelManager is at update_id (\d+)/.exec(line);
    if (ids) {
      entry.monitorUpdateId = BigInt(ids[1]);
      entry.managerUpdateId = BigInt(ids[2]);
    }
    channels.set(channelId, entry);
  }
  return [...channels.values()];
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

/** Whether the caller accepts LDK's force-close of this channel (`forceCloseStaleChannels`). */
function forceCloseAccepted(options: RestoreNodeOptions, channelId: string): boolean {
  const accepted = options.forceCloseStaleChannels;
  return accepted === true || (Array.isArray(accepted) && accepted.some((id) => typeof id === 'string' && id.toLowerCase() === channelId));
}

/**
 * Monitors of channels the manager just read does not know and LDK queued a force-close for
 * (it broadcasts the latest commitment transaction once the node runs): harmless for a channel
 * already closed on chain, the loss of the channel for one the stored manager is merely older
 * than (written before the channel's funding). A monitor LDK did not queue (one closed without
 * a broadcast, say) is left alone, as LDK leaves it.
 */
function monitorsUnknownToManager(channelManager: ldk.ChannelManager, monitors: readonly RestoredMonitor[], forceClosesQueued: ReadonlySet<string>): RestoredMonitor[] {
  const known = new Set(channelManager.list_channels().map((c) => hexOf(c.get_channel_id().get_a())));
  return monitors.filter((m) => {
    const channelId = hexOf(m.monitor.channel_id().get_a());
    return !known.has(channelId) && forceClosesQueued.has(channelId);
  });
}

/**
 * A monitor that still sees its channel open: funding output not spent in the blocks it was
 * given and no commitment transaction signed (LDK then reports the balance as "claimable on
 * channel close"; a monitor of a closed channel reports it awaiting confirmations, or nothing).
 */
function seesChannelOpen(m: RestoredMonitor): boolean {
  return m.monitor.get_claimable_balances().some((b) => b instanceof ldk.Balance_ClaimableOnChannelClose);
}

/**
 * Live channels the stored manager does not know: refused when the caller asked for that
 * (`refuseChannelsUnknownToManager`) and did not accept their force-close, otherwise returned
 * and logged as a warning.
 */
function checkUnknownChannels(unknown: readonly RestoredMonitor[], options: RestoreNodeOptions): StaleManagerChannel[] {
  const live = unknown.filter(seesChannelOpen);
  if (live.length === 0) return [];
  const channels: StaleManagerChannel[] = live.map((m) => ({
    reason: 'unknown',
    channelId: hexOf(m.monitor.channel_id().get_a()),
    monitorName: m.name,
    monitorUpdateId: m.monitor.get_latest_update_id(),
    managerUpdateId: undefined,
  }));
  const describe = (list: StaleManagerChannel[]): string =>
    list.map((c) => `channel ${c.channelId} [${c.monitorName}] (open as of its monitor's block ${live.find((m) => m.name === c.monitorName)!.monitor.current_best_block().get_height()})`).join('; ');
  const causes =
    'Either the channel was closed cooperatively and its closing transaction has not confirmed in the blocks the monitor was given, or the manager was written before the channel was opened.';
  const refused = options.refuseChannelsUnknownToManager ? channels.filter((c) => !forceCloseAccepted(options, c.channelId)) : [];
  if (refused.length > 0) {
    // The manager just read is dropped: LDK queued each force-close as a monitor update it
    // applies only once the node runs, and no monitor is watched yet, so nothing was broadcast
    // and nothing was written.
    throw new StaleChannelManagerError(
      `the stored ChannelManager does not know ${describe(refused)}, whose monitor still sees ${refused.length === 1 ? 'it' : 'them'} open: started from it, LDK would force-close ${refused.length === 1 ? 'that channel' : 'those channels'} and broadcast the latest commitment transaction. ` +
        `${causes} Nothing was changed. Replay the blocks the node missed in beforeWatch (a confirmed closing transaction ends this), look for a newer ChannelManager (another device, a newer backup), ` +
        'or pass forceCloseStaleChannels (true, or these channel ids) only to accept the force-close',
      refused,
    );
  }
  const accepted = channels.every((c) => forceCloseAccepted(options, c.channelId));
  (options.log ?? stderrLogger).warn(
    { channels: channels.map((c) => c.channelId) },
    accepted
      ? `the stored ChannelManager does not know ${describe(channels)}: LDK force-closes these channels (forceCloseStaleChannels)`
      : `the stored ChannelManager does not know ${describe(channels)}, whose monitor still sees it open: LDK force-closes it and broadcasts its latest commitment transaction once the node runs. ${causes} ` +
          'If the app did not close it, do not run this node: look for a newer ChannelManager (RestoredNode.channelsUnknownToManager lists these channels)',
  );
  return channels;
}

type ManagerReadResult = ldk.Result_C2Tuple_ThirtyTwoBytesChannelManagerZDecodeErrorZ;

function readManager(bytes: Uint8Array, monitors: RestoredMonitor[], watch: ldk.Watch, logger: ldk.Logger, options: RestoreNodeOptions): ManagerReadResult {
  return ldk.UtilMethods.constructor_C2Tuple_ThirtyTwoBytesChannelManagerZ_read(
    bytes,
    options.entropySource,
    options.nodeSigner,
    options.signerProvider,
    options.feeEstimator,
    watch,
    options.broadcaster,
    options.router,
    options.messageRouter,
    logger,
    options.config,
    monitors.map((m) => m.monitor),
  );
}

/** Reads the manager with a logger that captures LDK's errors and queued force-closes (passed on to `inner`). */
function readManagerCapturing(
  bytes: Uint8Array,
  monitors: RestoredMonitor[],
  watch: ldk.Watch,
  inner: ldk.LoggerInterface | undefined,
  options: RestoreNodeOptions,
): { res: ManagerReadResult; logged: string[]; forceClosesQueued: Set<string> } {
  const capture = new CapturingLogger(inner);
  const res = readManager(bytes, monitors, watch, capture.ldkLogger, options);
  const logged = [...capture.errors];
  const forceClosesQueued = new Set(capture.forceClosesQueued);
  capture.stop();
  return { res, logged, forceClosesQueued };
}

function decodeManager(
  bytes: Uint8Array,
  monitors: RestoredMonitor[],
  chainMonitor: ldk.ChainMonitor,
  options: RestoreNodeOptions,
): { channelManager: ldk.ChannelManager; blockHash: Uint8Array; forceClosesQueued: Set<string> } {
  if (!(options.logger instanceof ldk.Logger)) {
    const { res, logged, forceClosesQueued } = readManagerCapturing(bytes, monitors, chainMonitor.as_Watch(), options.logger, options);
    return { ...checkManagerRead(res, logged, monitors, options), forceClosesQueued };
  }
  // An opaque ldk.Logger cannot be wrapped (it offers no way to pass a record on), yet LDK says
  // only in its log that it is about to force-close a channel. A first read, with a capturing
  // logger and a ChainMonitor of its own, tells; reading has no side effect (no monitor is
  // watched, nothing is broadcast), so the manager is then read again with the app's logger.
  const scratch = ldk.ChainMonitor.constructor_new(ldk.Option_FilterZ.constructor_none(), options.broadcaster, options.logger, options.feeEstimator, unusedPersist());
  const probe = readManagerCapturing(bytes, monitors, scratch.as_Watch(), undefined, options);
  checkManagerRead(probe.res, probe.logged, monitors, options);
  const read = checkManagerRead(readManager(bytes, monitors, chainMonitor.as_Watch(), options.logger, options), probe.logged, monitors, { ...options, log: silentLogger });
  return { ...read, forceClosesQueued: probe.forceClosesQueued };
}

/** The Persist of the probing read's ChainMonitor: reading a manager never persists a monitor. */
function unusedPersist(): ldk.Persist {
  return ldk.Persist.new_impl({
    persist_new_channel: () => ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_UnrecoverableError,
    update_persisted_channel: () => ldk.ChannelMonitorUpdateStatus.LDKChannelMonitorUpdateStatus_UnrecoverableError,
    archive_persisted_channel: () => {},
  });
}

/** The manager LDK read, or the typed error that says why it must not be used. */
function checkManagerRead(res: ManagerReadResult, logged: string[], monitors: RestoredMonitor[], options: RestoreNodeOptions): { channelManager: ldk.ChannelManager; blockHash: Uint8Array } {
  if (res instanceof ldk.Result_C2Tuple_ThirtyTwoBytesChannelManagerZDecodeErrorZ_OK) {
    if (logged.some((l) => l.includes(STALE_MANAGER))) {
      const channels = staleChannelsFromLog(logged, monitors);
      const named = channels.length > 0 ? channels.map(describeStale).join('; ') : "channel(s) LDK's log did not name";
      // A list accepts only the channels it names; channels LDK did not name are never accepted by one.
      if (options.forceCloseStaleChannels !== true && (channels.length === 0 || channels.some((c) => !forceCloseAccepted(options, c.channelId)))) {
        // The manager just read is dropped: LDK queued each force-close as a monitor update it
        // applies only once the node runs, and no monitor is watched yet, so nothing was
        // broadcast and nothing was written.
        throw new StaleChannelManagerError(
          `the stored ChannelManager is older than the monitor of ${named}: started from it, LDK would force-close ${channels.length === 1 ? 'that channel' : 'those channels'} and broadcast the latest commitment transaction. ` +
            'Nothing was changed. Look for a newer ChannelManager (another device, a newer backup); pass forceCloseStaleChannels (true, or these channel ids) only to accept the force-close',
          channels,
        );
      }
      (options.log ?? stderrLogger).warn({ channels: channels.map((c) => c.channelId) }, `the stored ChannelManager is older than the monitor of ${named}: LDK force-closes these channels (forceCloseStaleChannels)`);
    }
    return { channelManager: res.res.get_b(), blockHash: res.res.get_a() };
  }
  const err = res instanceof ldk.Result_C2Tuple_ThirtyTwoBytesChannelManagerZDecodeErrorZ_Err ? res.err : undefined;
  const detail = logged.length > 0 ? `: ${logged.join(' | ')}` : '';
  if (err instanceof ldk.DecodeError_DangerousValue) {
    throw new StaleMonitorError(`a stored ChannelMonitor is older than the stored ChannelManager; starting would risk funds${detail}`);
  }
  const missing = logged.some((l) => l.includes('Missing ChannelMonitor'));
  if (missing) {
    const channelId = channelIdFromLog(logged);
    throw new MissingMonitorError(`the ChannelManager knows channel ${channelId ?? '(unknown)'} but the store has no monitor for it${detail}`, channelId);
  }
  const kind = err ? err.constructor.name.replace(/^DecodeError_/, '') : 'unknown';
  // LDK's words when the node's keys derive a different key than the stored manager holds:
  // the stored data is fine, the seed is not (a "corrupt" verdict alone invites deleting it).
  const wrongKeys = logged.some((l) => l.includes('Key that was generated does not match the existing key'))
    ? '. The keys given (entropySource/nodeSigner/signerProvider) are not the ones this manager was written with: restore with the wallet\'s own seed; the stored data is likely intact'
    : '';
  throw new CorruptStateError(
    `stored ChannelManager does not load (${kind})${detail}${wrongKeys}`,
    CHANNEL_MANAGER_NAMESPACE.primary,
    CHANNEL_MANAGER_NAMESPACE.secondary,
    CHANNEL_MANAGER_NAMESPACE.key,
  );
}

function describeStale(c: StaleManagerChannel): string {
  const ids = c.monitorUpdateId !== undefined ? ` (monitor at update ${c.monitorUpdateId}, manager at ${c.managerUpdateId})` : '';
  return `channel ${c.channelId}${c.monitorName ? ` [${c.monitorName}]` : ''}${ids}`;
}

/**
 * Monitors whose updates are stored although neither the monitor nor an archived copy is: a
 * store holding them is not a new wallet. Only asked when there is no manager and no monitor,
 * so a listing of the whole store costs nothing on a normal restore.
 */
async function updatesWithoutMonitor(store: AsyncKVStore, limiter: Limiter): Promise<string[]> {
  const keys = await limiter(() => store.listAll());
  const archived = new Set(
    keys
      .filter((k) => k.primaryNamespace === ARCHIVED_CHANNEL_MONITOR_NAMESPACE.primary && k.secondaryNamespace === ARCHIVED_CHANNEL_MONITOR_NAMESPACE.secondary)
      .map((k) => k.key),
  );
  const names = new Set(keys.filter((k) => k.primaryNamespace === CHANNEL_MONITOR_UPDATE_PRIMARY_NAMESPACE && !archived.has(k.secondaryNamespace)).map((k) => k.secondaryNamespace));
  return [...names].sort();
}

/**
 * A closed or failed VssPersister writes nothing and reports nothing to LDK: a node restored
 * over it would hold every channel for good (each monitor's re-registration waits for a write
 * that never comes). Checked before restore starts and again right before the monitors are
 * watched, since the app may close the persister while restore reads the store.
 */
function checkPersisterRunning(persister: RestoreNodeOptions['persister'], when: string): void {
  if (!(persister instanceof VssPersister)) return;
  const fatal = persister.fatalError;
  if (fatal) {
    throw new PersisterStoppedError(`the VssPersister given to restoreNode stopped ${when} (${fatal.name}: ${fatal.message}): a node restored over it could never persist a monitor. Nothing was changed; restore with a new VssPersister once the cause is fixed`, { cause: fatal });
  }
  if (persister.isClosed) {
    throw new PersisterStoppedError(`the VssPersister given to restoreNode was closed ${when}: a node restored over it could never persist a monitor and would hold every channel. Nothing was changed; restore with a new VssPersister`);
  }
}

/**
 * Restores a node from `store`: every monitor with its updates applied, then the
 * ChannelManager over them, then each monitor re-registered with `watch_channel`.
 */
export async function restoreNode(options: RestoreNodeOptions): Promise<RestoredNode> {
  // Before anything is read: a persister over another store would send every later monitor
  // update where this restore does not read (and watch_channel re-persists each monitor there).
  if (options.persister instanceof VssPersister) checkPersisterStore(options.persister, options.store, 'restoreNode');
  checkPersisterRunning(options.persister, 'before the restore');
  const started = performance.now();
  const log = options.log ?? stderrLogger;
  const ldkLogger = options.logger instanceof ldk.Logger ? options.logger : ldk.Logger.new_impl(options.logger);
  const limiter = createLimiter(options.concurrency ?? 16);
  const readContext = {
    entropySource: options.entropySource,
    signerProvider: options.signerProvider,
    broadcaster: options.broadcaster,
    feeEstimator: options.feeEstimator,
    logger: ldkLogger,
  };
  const [monitors, managerBytes] = await Promise.all([
    options.readMonitors ? Promise.resolve(options.readMonitors()) : readChannelMonitors(options.store, readContext, { limiter }),
    limiter(() => readManagerBytes(options.store)),
  ]);
  if (!managerBytes) {
    if (monitors.length > 0) {
      throw new MissingChannelManagerError(`the store has ${monitors.length} channel monitor(s) but no ChannelManager; refusing to start a node without its channels`);
    }
    const withoutMonitor = await updatesWithoutMonitor(options.store, limiter);
    if (withoutMonitor.length > 0) {
      throw new MissingChannelManagerError(
        `the store has no ChannelManager and no channel monitor, but holds monitor updates of ${withoutMonitor.length} channel(s) (e.g. ${withoutMonitor[0]}): ` +
          'the state of those channels is incomplete (an interrupted copy, or lost data); refusing to start a node without its channels',
      );
    }
    throw new NothingToRestoreError('the store holds no ChannelManager and no channel monitors');
  }
  for (const m of monitors) {
    if (m.orphanUpdateIds.length > 0) {
      log.warn({ monitor: m.name, orphanUpdateIds: m.orphanUpdateIds.map(String) }, 'monitor updates after a gap are ignored (as LDK does)');
    }
  }

  const persist = options.persister instanceof VssPersister ? options.persister.toLdkPersist() : options.persister;
  const filter = options.filter ? ldk.Option_FilterZ.constructor_some(options.filter) : ldk.Option_FilterZ.constructor_none();
  const chainMonitor = ldk.ChainMonitor.constructor_new(filter, options.broadcaster, ldkLogger, options.feeEstimator, persist);
  if (options.persister instanceof VssPersister) {
    options.persister.attach(chainMonitor);
    // Orphans (after a gap) too, apart: once a full monitor containing their id is durable they
    // are dead weight like the rest, and LDK may never re-issue them as deltas of their own (e.g.
    // the id now falls on a full monitor), so nothing else would remove them; but they are not
    // this run's updates, so they never count as durable state.
    for (const m of monitors) options.persister.noteStoredUpdates(m.name, [...m.appliedUpdateIds, ...m.staleUpdateIds], m.orphanUpdateIds);
  }

  const { channelManager, blockHash, forceClosesQueued } = decodeManager(managerBytes, monitors, chainMonitor, options);
  const unknownToManager = monitorsUnknownToManager(channelManager, monitors, forceClosesQueued);
  await options.beforeWatch?.({ channelManager, monitors });
  // After beforeWatch: a monitor that has seen its channel's closing transaction confirm (in
  // the blocks replayed there) no longer sees the channel open.
  const channelsUnknownToManager = checkUnknownChannels(unknownToManager, options);
  checkPersisterRunning(options.persister, 'while the node was being restored');

  for (const m of monitors) {
    const outpoint = m.monitor.get_funding_txo().get_a();
    const res = chainMonitor.as_Watch().watch_channel(outpoint, m.monitor);
    if (!res.is_ok()) {
      log.error({ monitor: m.name }, 'ChainMonitor refused a restored monitor');
      throw new CorruptStateError(`ChainMonitor refused restored monitor ${m.name} (duplicate or invalid)`, 'monitors', '', m.name);
    }
  }

  const durationMs = performance.now() - started;
  const updatesApplied = monitors.reduce((n, m) => n + m.appliedUpdateIds.length, 0);
  const bytesRead = managerBytes.length + monitors.reduce((n, m) => n + m.bytesRead, 0);
  log.info({ monitors: monitors.length, updatesApplied, bytesRead, durationMs: Math.round(durationMs) }, 'node restored');
  return { channelManager, chainMonitor, monitors, managerBlockHash: blockHash, stats: { monitors: monitors.length, updatesApplied, bytesRead, durationMs }, channelsUnknownToManager };
}
