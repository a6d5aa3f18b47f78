/**
 * Typed errors of the store layer. Every failure a wallet must react to differently has
 * its own class, so callers can branch with `instanceof` instead of parsing messages.
 */

/** Base class of every store-layer error. `cause` carries the underlying error, if any. */
export class StoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The key does not exist (LDK's `NotFound`). */
export class KeyNotFoundError extends StoreError {
  constructor(
    readonly primaryNamespace: string,
    readonly secondaryNamespace: string,
    readonly key: string,
    options?: { cause?: unknown },
  ) {
    super(`key not found: ${JSON.stringify([primaryNamespace, secondaryNamespace, key])}`, options);
  }
}

/** A namespace or key breaks LDK's rules (alphabet, length, empty-primary rule). */
export class InvalidKeyError extends StoreError {}

/** A value to write is not a `Uint8Array` (nothing was queued or sent). */
export class InvalidValueError extends StoreError {}

/**
 * A conditional write found a version other than the one this store last saw: another
 * writer changed the key, or the server lost writes. Never retried blindly.
 */
export class ConcurrentWriterError extends StoreError {}

/** The server's state is older than what this device saw last: it went back in time. */
export class RollbackDetectedError extends StoreError {}

/** Stored bytes could not be decrypted or decoded (wrong key, tampering, unknown format). */
export class DataIntegrityError extends StoreError {}

/** A blocking (sync) operation did not complete within its deadline. */
export class StoreTimeoutError extends StoreError {}

/** The store could not be opened; it is never treated as empty on such errors. */
export class StoreOpenError extends StoreError {}

/** The store was closed and accepts no further operations. */
export class StoreClosedError extends StoreError {}

/**
 * The server could not be reached, refused the request, or failed (network, timeout, auth,
 * 5xx, protocol mismatch). `cause` carries the client's typed error. Usually transient: the
 * operation may be retried. A failed write or remove may still have been applied (its reply was
 * lost); the store then reads the key back before its next operation on that key, so a retry
 * neither loses nor duplicates anything.
 */
export class StoreIOError extends StoreError {}

/**
 * The version ledger could not record a change (its storage failed). `cause` carries the
 * ledger's error. A write or batch the server had already accepted rejects with this error
 * although the server holds the new data; a remove stops before it is sent. Either way the ledger
 * never claims more than the server holds, and retrying the operation is safe.
 */
export class VersionLedgerError extends StoreError {}

/**
 * A synchronous write or remove found an asynchronous write or remove of the SAME key still
 * in flight. The blocking call cannot wait for it (the event loop that would finish it is
 * the one being blocked), and running both could reorder them, so it fails instead. Nothing
 * was sent; retry once the asynchronous operation has settled.
 */
export class KeyBusyError extends StoreError {}
