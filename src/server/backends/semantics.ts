/**
 * Versioning rules shared by every backend, so the memory backend and the SQL backends
 * cannot drift apart on the details the reference server defines.
 */
import { GLOBAL_VERSION_KEY, INT64_MAX } from '../../protocol/index.js';
import type { DeleteItem, PutItem, PutRequest } from './types.js';

/** Version a freshly created (or unconditionally overwritten) record gets. */
export const INITIAL_RECORD_VERSION = 1n;
export const CREATE_ONLY_VERSION = 0n;
export const UNCONDITIONAL = -1n;

/** Stored version after a successful compare-and-set from `version` (saturates like the reference). */
export function nextVersion(version: bigint): bigint {
  return version >= INT64_MAX ? INT64_MAX : version + 1n;
}

export type WriteStep = { kind: 'put'; item: PutItem } | { kind: 'delete'; item: DeleteItem };

/**
 * The statements a PutObjects request executes, in the reference's order: transaction items,
 * then the global-version row (if requested), then the deletes.
 */
export function planWrites(request: PutRequest): WriteStep[] {
  const steps: WriteStep[] = request.transactionItems.map((item) => ({ kind: 'put', item }));
  if (request.globalVersion !== undefined) {
    steps.push({ kind: 'put', item: { key: GLOBAL_VERSION_KEY, version: request.globalVersion, value: new Uint8Array(0) } });
  }
  for (const item of request.deleteItems) steps.push({ kind: 'delete', item });
  return steps;
}
