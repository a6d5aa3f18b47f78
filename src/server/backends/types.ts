/**
 * The storage contract every backend (PostgreSQL, PGlite, memory) implements. It speaks in
 * plain values (bigint versions, byte arrays); protobuf and HTTP stay in the layers above.
 * Validation of request shapes happens before a backend is called; a backend only has to
 * implement the reference's versioning rules exactly.
 */

/** A stored record as GetObject returns it. */
export interface StoredRecord {
  key: string;
  version: bigint;
  value: Uint8Array;
}

/** One write of a PutObjects request (`transaction_items`, or the implicit global-version row). */
export interface PutItem {
  key: string;
  /** 0 = create only, -1 = unconditional (resets to 1), v = compare-and-set (becomes v+1). */
  version: bigint;
  value: Uint8Array;
}

/** One `delete_items` entry or a DeleteObject target: -1 = unconditional, else compare-and-delete. */
export interface DeleteItem {
  key: string;
  version: bigint;
}

export interface PutRequest {
  storeId: string;
  transactionItems: readonly PutItem[];
  /** Absent: the global version is neither checked nor changed. */
  globalVersion?: bigint;
  deleteItems: readonly DeleteItem[];
}

/** One row of a ListKeyVersions page. */
export interface ListedKey {
  key: string;
  version: bigint;
  /** Creation sequence number; pages run newest (highest) first. */
  sortOrder: bigint;
}

export interface ListQuery {
  storeId: string;
  /** Matched literally (no wildcards); '' matches every key. */
  keyPrefix: string;
  /** Maximum number of rows to return. */
  limit: number;
  /** Only rows created before this sequence number (the decoded page token). */
  beforeSortOrder?: bigint;
}

export interface StorageBackend {
  /** Short name for logs and /health: 'memory', 'pglite' or 'postgres'. */
  readonly kind: string;
  get(userToken: string, storeId: string, key: string): Promise<StoredRecord | undefined>;
  /** All-or-nothing; throws ConflictError when any version check fails. */
  put(userToken: string, request: PutRequest): Promise<void>;
  /** Idempotent: a missing key or a version mismatch is not an error. */
  delete(userToken: string, storeId: string, item: DeleteItem): Promise<void>;
  /** Keys (never the global-version row) newest first, excluding `global_version`. */
  list(userToken: string, query: ListQuery): Promise<ListedKey[]>;
  /** Resolves when the backend can serve requests; rejects otherwise. */
  checkHealth(): Promise<void>;
  /**
   * For a backend that can stop for good (the embedded database after a PANIC or FATAL):
   * resolves, never rejects, with the error every operation fails with from then on. Pending
   * while the backend works; absent on backends that recover by themselves (memory, PostgreSQL).
   */
  readonly stopped?: Promise<Error>;
  close(): Promise<void>;
}
