/**
 * Typed errors of the LDK layer. Restore fails closed: every way a node could come back
 * wrong (or empty) has its own class so a wallet can tell the user what happened.
 */

export class LdkPersistenceError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The store holds no ChannelManager and no monitors: there is nothing to restore. */
export class NothingToRestoreError extends LdkPersistenceError {}

/** Monitors exist but the ChannelManager is missing: restoring would lose every channel. */
export class MissingChannelManagerError extends LdkPersistenceError {}

/** The ChannelManager knows a channel whose monitor is not in the store. */
export class MissingMonitorError extends LdkPersistenceError {
  constructor(
    message: string,
    readonly channelId: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A stored monitor is older than the ChannelManager (LDK's `DangerousValue`): using it could lose funds. */
export class StaleMonitorError extends LdkPersistenceError {}

/**
 * A channel the stored ChannelManager is too old for: LDK would force-close it on start.
 * - `outdated`: the manager knows the channel, but its stored monitor holds updates the manager
 *   never heard of (LDK: "A ChannelManager is stale compared to the current ChannelMonitor").
 * - `unknown`: the manager does not know the channel at all, yet its monitor still sees it open
 *   (funding output unspent, no commitment transaction signed). Either the manager was written
 *   before the channel was opened, or the channel was closed cooperatively and the monitor has not
 *   seen the closing transaction confirm yet (LDK 0.1 cannot tell these apart either).
 */
export interface StaleManagerChannel {
  reason: 'outdated' | 'unknown';
  /** LDK's channel id (hex). */
  channelId: string;
  /** The monitor's name (`<funding txid>_<index>`), when a restored monitor has this channel id. */
  monitorName: string | undefined;
  /** Latest update id in the stored monitor, when LDK logged it. */
  monitorUpdateId: bigint | undefined;
  /** Latest update id the stored ChannelManager knows for the channel, when LDK logged it (never for `unknown`). */
  managerUpdateId: bigint | undefined;
}

/**
 * The stored ChannelManager is older than a channel's monitor (LDK: "A ChannelManager is stale
 * compared to the current ChannelMonitor!"), or, when the caller asks for that check
 * (`refuseChannelsUnknownToManager`), older than the channel itself (a monitor of a channel the
 * manager does not know, see `StaleManagerChannel.reason`). Started from it, LDK force-closes
 * each such channel and broadcasts its latest commitment transaction: the outcome wallets fear
 * most, so restore refuses unless the caller opts in (`forceCloseStaleChannels`).
 * Usually a restored backup mixes an old manager with newer monitors, or the manager was written
 * by another tool or without the persister linked to the event loop; a newer manager may still
 * exist elsewhere.
 */
export class StaleChannelManagerError extends LdkPersistenceError {
  constructor(
    message: string,
    readonly channels: StaleManagerChannel[],
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Stored bytes are not a valid LDK object (a monitor, an update or the manager). */
export class CorruptStateError extends LdkPersistenceError {
  constructor(
    message: string,
    readonly primaryNamespace: string,
    readonly secondaryNamespace: string,
    readonly key: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The persister was closed or failed; it accepts no further writes. */
export class PersisterStoppedError extends LdkPersistenceError {}

/**
 * `restoreNode` or `LdkEventLoop` was given a `store` other than the one its `VssPersister`
 * writes to (another store id, server, encryption key, or a stale instance from before a
 * reconnect): the node's monitor updates would go where the next restore does not read, and
 * that restore would come back stale. Raised before anything is read or written. Only checked
 * when both are `VssStore` objects (they must then be the same object): a wrapper, another
 * AsyncKVStore or an `ldk.Persist` that is not a VssPersister cannot be told apart, and passes.
 */
export class StoreMismatchError extends LdkPersistenceError {
  constructor(
    message: string,
    /** Store id of the `store` option (restore reads there; the event loop writes the manager there). */
    readonly storeId: string,
    /** Store id of the VssPersister's store (where monitor updates go). */
    readonly persisterStoreId: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A copy made by `migrateStore` did not read back identical. */
export class MigrationVerificationError extends LdkPersistenceError {}

/**
 * LDK's WebAssembly module trapped (a Rust panic, whose message LDK prints to stderr) during a
 * call the event loop made. The module's state is then unusable for every node in the process:
 * stop the process and restore the node from its store.
 */
export class LdkPanicError extends LdkPersistenceError {}
