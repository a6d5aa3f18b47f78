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

/** Whether a step is an INSERT attempt, which draws a creation sequence number (even if it then updates or does nothing). */
export function isInsertAttempt(step: WriteStep): boolean {
  return step.kind === 'put' && (step.item.version === UNCONDITIONAL || step.item.version === CREATE_ONLY_VERSION);
}

export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The order a PutObjects request's statements run in: by key, so concurrent multi-key puts lock
 * rows in the same order and never deadlock. Keys within a request are distinct, so this order
 * cannot change whether the request applies; it stops at the first failing statement.
 */
export function statementOrder(planned: readonly WriteStep[]): WriteStep[] {
  return [...planned].sort((a, b) => compareKeys(a.item.key, b.item.key));
}

/**
 * Whether a multi-statement put draws its creation sequence numbers before any statement runs:
 * when its insert attempts are not in key order, since the reference numbers the keys a request
 * creates in request order. Then every insert attempt consumes a number even if the request
 * fails; otherwise only those that run before the first failing statement (in key order) do.
 */
export function drawsSortOrdersFirst(planned: readonly WriteStep[]): boolean {
  const inserts = planned.filter(isInsertAttempt);
  return inserts.some((step, i) => i > 0 && compareKeys(inserts[i - 1].item.key, step.item.key) > 0);
}
