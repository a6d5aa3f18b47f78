/**
 * Store operations are written once, as generators that YIELD what they need from the
 * outside world (a VSS request, a durable version record) and receive the answer. Two
 * drivers run them: an async one (awaits the VssClient and the ledger) and a blocking one
 * (the sync bridge). So the async and the sync API share one implementation and one copy
 * of the store's state (versions, ordering), instead of two that could drift apart.
 */
import type { vss, VssOperation } from '../protocol/index.js';
import { StoreClosedError, VersionLedgerError } from './errors.js';
import type { VersionChange } from './version-ledger.js';

export interface RequestOf {
  getObject: vss.GetObjectRequest.$Properties;
  putObjects: vss.PutObjectRequest.$Properties;
  deleteObject: vss.DeleteObjectRequest.$Properties;
  listKeyVersions: vss.ListKeyVersionsRequest.$Properties;
}

export interface ResponseOf {
  getObject: vss.GetObjectResponse;
  putObjects: vss.PutObjectResponse;
  deleteObject: vss.DeleteObjectResponse;
  listKeyVersions: vss.ListKeyVersionsResponse;
}

/** A VSS request an operation needs answered. */
export type VssCall = { [K in VssOperation]: { kind: 'vss'; operation: K; request: RequestOf[K] } }[VssOperation];

/** Versions that must be durably recorded before the operation may report success. */
export interface RecordVersions {
  kind: 'record';
  changes: VersionChange[];
}

export type StoreEffect = VssCall | RecordVersions;
export type Operation<T> = Generator<StoreEffect, T, unknown>;

/** Sends one VSS request and returns its typed response (or throws the client's error). */
export function* call<K extends VssOperation>(operation: K, request: RequestOf[K]): Generator<StoreEffect, ResponseOf[K], unknown> {
  return (yield { kind: 'vss', operation, request } as VssCall) as ResponseOf[K];
}

/**
 * Records versions durably (no-op for an empty list); a ledger failure becomes VersionLedgerError.
 * An aborted store refuses to record with StoreClosedError, which stays what it is: nothing
 * failed in the ledger, and a remove queued before abort() must fail like every other queued
 * operation (LDK then sees NotConnected, not a retryable ledger failure).
 */
export function* record(changes: VersionChange[]): Generator<StoreEffect, void, unknown> {
  if (changes.length === 0) return;
  try {
    yield { kind: 'record', changes };
  } catch (cause) {
    if (cause instanceof StoreClosedError) throw cause;
    throw new VersionLedgerError(`the version ledger could not record ${changes.length} change(s): ${(cause as Error)?.message ?? String(cause)}`, {
      cause,
    });
  }
}

export interface AsyncEffects {
  vss(call: VssCall): Promise<unknown>;
  record(changes: VersionChange[]): Promise<void>;
}

export interface SyncEffects {
  vss(call: VssCall): unknown;
  record(changes: VersionChange[]): void;
}

/** Runs an operation, awaiting each effect; failures are thrown back into the operation. */
export async function runAsync<T>(operation: Operation<T>, effects: AsyncEffects): Promise<T> {
  let step = operation.next();
  while (!step.done) {
    let answer: unknown;
    let failure: { error: unknown } | undefined;
    try {
      answer = step.value.kind === 'vss' ? await effects.vss(step.value) : await effects.record(step.value.changes);
    } catch (error) {
      failure = { error };
    }
    step = failure ? operation.throw(failure.error) : operation.next(answer);
  }
  return step.value;
}

/** Runs an operation, blocking on each effect. */
export function runSync<T>(operation: Operation<T>, effects: SyncEffects): T {
  let step = operation.next();
  while (!step.done) {
    let answer: unknown;
    let failure: { error: unknown } | undefined;
    try {
      answer = step.value.kind === 'vss' ? effects.vss(step.value) : effects.record(step.value.changes);
    } catch (error) {
      failure = { error };
    }
    step = failure ? operation.throw(failure.error) : operation.next(answer);
  }
  return step.value;
}
