/**
 * In-memory backend for unit tests and harness experiments. It reproduces the PostgreSQL
 * backend's observable behaviour, including the creation sequence that ListKeyVersions orders by
 * and page tokens carry: consumed by every INSERT attempt that runs (a failed multi-item put
 * stops at its first failing statement in key order, unless its numbers were drawn beforehand),
 * kept on updates. Not for production data.
 */
import { GLOBAL_VERSION_KEY } from '../../protocol/index.js';
import { ConflictError } from '../errors.js';
import { CREATE_ONLY_VERSION, drawsSortOrdersFirst, INITIAL_RECORD_VERSION, isInsertAttempt, nextVersion, planWrites, statementOrder, UNCONDITIONAL, type WriteStep } from './semantics.js';
import type { DeleteItem, ListedKey, ListQuery, PutItem, PutRequest, StorageBackend, StoredRecord } from './types.js';

interface MemoryRow {
  value: Uint8Array;
  version: bigint;
  sortOrder: bigint;
}

/** A deep copy of a MemoryBackend's contents, for "restore from an older backup" tests. */
export interface MemorySnapshot {
  readonly nextSortOrder: bigint;
  readonly rows: ReadonlyArray<{ userToken: string; storeId: string; key: string; value: Uint8Array; version: bigint; sortOrder: bigint }>;
}

type StoreRows = Map<string, MemoryRow>;

/** Pending changes of one PutObjects request: `null` marks a deletion. */
type Overlay = Map<string, MemoryRow | null>;

export class MemoryBackend implements StorageBackend {
  readonly kind = 'memory';
  private stores = new Map<string, StoreRows>();
  private sequence = 0n;
  private closed = false;

  async get(userToken: string, storeId: string, key: string): Promise<StoredRecord | undefined> {
    this.assertOpen();
    const row = this.stores.get(storeKey(userToken, storeId))?.get(key);
    return row ? { key, version: row.version, value: Uint8Array.prototype.slice.call(row.value) } : undefined;
  }

  async put(userToken: string, request: PutRequest): Promise<void> {
    this.assertOpen();
    const id = storeKey(userToken, request.storeId);
    const rows: StoreRows = this.stores.get(id) ?? new Map();
    const overlay: Overlay = new Map();
    const read = (key: string): MemoryRow | undefined => {
      const pending = overlay.get(key);
      return pending === null ? undefined : (pending ?? rows.get(key));
    };
    // The SQL backends' statements, in their order: creation numbers drawn up front when the
    // inserts are out of key order, then one statement per step in key order, stopping at the
    // first that fails (the numbers drawn so far stay used, as a PostgreSQL sequence's do).
    const planned = planWrites(request);
    const steps = statementOrder(planned);
    const drawn = new Map<WriteStep, bigint>();
    if (steps.length > 1 && drawsSortOrdersFirst(planned)) for (const step of planned.filter(isInsertAttempt)) drawn.set(step, ++this.sequence);
    for (const step of steps) {
      const applied = step.kind === 'put' ? this.applyPut(read, overlay, step.item, drawn.get(step)) : applyDelete(read, overlay, step.item);
      if (!applied) throw new ConflictError();
    }
    for (const [key, row] of overlay) {
      if (row === null) rows.delete(key);
      else rows.set(key, row);
    }
    if (rows.size > 0) this.stores.set(id, rows);
    else this.stores.delete(id);
  }

  async delete(userToken: string, storeId: string, item: DeleteItem): Promise<void> {
    this.assertOpen();
    const rows = this.stores.get(storeKey(userToken, storeId));
    const row = rows?.get(item.key);
    if (!rows || !row) return;
    if (item.version === UNCONDITIONAL || row.version === item.version) rows.delete(item.key);
  }

  async list(userToken: string, query: ListQuery): Promise<ListedKey[]> {
    this.assertOpen();
    const rows = this.stores.get(storeKey(userToken, query.storeId));
    if (!rows || query.limit <= 0) return [];
    const matches: ListedKey[] = [];
    for (const [key, row] of rows) {
      if (key === GLOBAL_VERSION_KEY || !key.startsWith(query.keyPrefix)) continue;
      if (query.beforeSortOrder !== undefined && row.sortOrder >= query.beforeSortOrder) continue;
      matches.push({ key, version: row.version, sortOrder: row.sortOrder });
    }
    matches.sort((a, b) => (a.sortOrder < b.sortOrder ? 1 : a.sortOrder > b.sortOrder ? -1 : 0));
    return matches.slice(0, query.limit);
  }

  async checkHealth(): Promise<void> {
    this.assertOpen();
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /** A deep copy of everything stored, including the creation sequence position. */
  snapshot(): MemorySnapshot {
    const rows: Array<MemorySnapshot['rows'][number]> = [];
    for (const [id, storeRows] of this.stores) {
      const [userToken, storeId] = JSON.parse(id) as [string, string];
      for (const [key, row] of storeRows) {
        rows.push({ userToken, storeId, key, value: Uint8Array.prototype.slice.call(row.value), version: row.version, sortOrder: row.sortOrder });
      }
    }
    return { nextSortOrder: this.sequence, rows };
  }

  /**
   * Replaces the contents with a snapshot. The sequence never moves backwards (like a real
   * database restored from backup, new rows must still sort after the restored ones).
   */
  restore(snapshot: MemorySnapshot): void {
    this.stores = new Map();
    for (const row of snapshot.rows) {
      const id = storeKey(row.userToken, row.storeId);
      const storeRows = this.stores.get(id) ?? new Map<string, MemoryRow>();
      storeRows.set(row.key, { value: Uint8Array.prototype.slice.call(row.value), version: row.version, sortOrder: row.sortOrder });
      this.stores.set(id, storeRows);
    }
    if (snapshot.nextSortOrder > this.sequence) this.sequence = snapshot.nextSortOrder;
  }

  /** `drawnSortOrder`: the creation number drawn for this insert attempt beforehand, if any. */
  private applyPut(read: (key: string) => MemoryRow | undefined, overlay: Overlay, item: PutItem, drawnSortOrder?: bigint): boolean {
    const existing = read(item.key);
    // A copy, whatever the caller passed: Buffer#slice is a view, which would keep the whole
    // request body alive for as long as the row (and share its memory).
    const value = Uint8Array.prototype.slice.call(item.value);
    if (item.version === UNCONDITIONAL || item.version === CREATE_ONLY_VERSION) {
      // An INSERT attempt consumes a sequence number even when it ends up updating or doing nothing.
      const sortOrder = drawnSortOrder ?? ++this.sequence;
      if (!existing) {
        overlay.set(item.key, { value, version: INITIAL_RECORD_VERSION, sortOrder });
        return true;
      }
      if (item.version === CREATE_ONLY_VERSION) return false;
      overlay.set(item.key, { value, version: INITIAL_RECORD_VERSION, sortOrder: existing.sortOrder });
      return true;
    }
    if (!existing || existing.version !== item.version) return false;
    overlay.set(item.key, { value, version: nextVersion(item.version), sortOrder: existing.sortOrder });
    return true;
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('MemoryBackend is closed');
  }
}

function applyDelete(read: (key: string) => MemoryRow | undefined, overlay: Overlay, item: DeleteItem): boolean {
  const existing = read(item.key);
  if (!existing) return false;
  if (item.version !== UNCONDITIONAL && existing.version !== item.version) return false;
  overlay.set(item.key, null);
  return true;
}

function storeKey(userToken: string, storeId: string): string {
  return JSON.stringify([userToken, storeId]);
}
