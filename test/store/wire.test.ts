/**
 * Client errors crossing the sync bridge's thread boundary come back as the same typed classes
 * with the fields the store decides on (status, server message, ambiguity, header-provider origin).
 */
import { describe, expect, it } from 'vitest';
import {
  AuthError,
  ConflictError,
  errorProvesNotApplied,
  InternalServerError,
  InvalidRequestError,
  NoSuchKeyError,
  VersionMismatchError,
  VssClientError,
} from '../../src/client/index.js';
import { StoreIOError } from '../../src/store/errors.js';
import { fromWireError, toWireError } from '../../src/store/wire.js';

const roundTrip = (error: unknown) => fromWireError(structuredClone(toWireError(error)));

describe('sync bridge error transport', () => {
  it('rebuilds every client error class with its status and server message', () => {
    const errors = [
      new NoSuchKeyError('no key', { status: 404 }),
      new InvalidRequestError('bad', { status: 400 }),
      new InternalServerError('boom', { status: 500 }),
      new ConflictError('version mismatch', { status: 409 }),
      new AuthError('expired', { status: 401 }),
      new VersionMismatchError('1', { status: 200 }),
      new VssClientError('timeout', 'no reply within 10 ms'),
    ];
    for (const error of errors) {
      const rebuilt = roundTrip(error);
      expect(rebuilt.constructor).toBe(error.constructor);
      expect(rebuilt.message).toBe(error.message);
      expect((rebuilt as { status?: number }).status).toBe(error.status);
    }
    expect((roundTrip(new VssClientError('timeout', 'x')) as VssClientError).reason).toBe('timeout');
    expect((roundTrip(new AuthError('provider down', { fromHeaderProvider: true })) as AuthError).fromHeaderProvider).toBe(true);
  });

  it('keeps afterAmbiguousAttempt on any error class, so a 401 after a lost reply still proves nothing', () => {
    const refused = new AuthError('token expired', { status: 401 });
    refused.afterAmbiguousAttempt = true;
    const rebuilt = roundTrip(refused);
    expect(rebuilt).toBeInstanceOf(AuthError);
    expect((rebuilt as AuthError).afterAmbiguousAttempt).toBe(true);
    expect(errorProvesNotApplied(rebuilt)).toBe(false);

    const conflict = new ConflictError('version mismatch', { status: 409 });
    conflict.afterAmbiguousAttempt = true;
    expect((roundTrip(conflict) as ConflictError).afterAmbiguousAttempt).toBe(true);
    expect(errorProvesNotApplied(roundTrip(new AuthError('x', { status: 401 })))).toBe(true);
  });

  it("keeps the server's Retry-After wait, so a caller of the blocking view can honour it too", () => {
    const limited = new InternalServerError('Rate limit exceeded', { status: 429 });
    limited.retryAfterMs = 2000;
    expect((roundTrip(limited) as InternalServerError).retryAfterMs).toBe(2000);
    expect((roundTrip(new InternalServerError('boom', { status: 500 })) as InternalServerError).retryAfterMs).toBeUndefined();
  });

  it('keeps the network error code of the cause chain, so the LDK bridge maps ECONNREFUSED as the async path does', () => {
    const system = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const refused = new VssClientError('network', 'request to http://127.0.0.1:1/vss/getObject: connect ECONNREFUSED', { cause: new Error('fetch failed', { cause: system }) });
    const rebuilt = roundTrip(refused);
    expect(rebuilt).toBeInstanceOf(VssClientError);
    const cause = rebuilt.cause as Error & { code?: string };
    expect(cause).toBeInstanceOf(Error);
    expect(cause.message).toBe('fetch failed');
    expect(cause.code).toBe('ECONNREFUSED');
    // An error without a cause gains none.
    expect(roundTrip(new VssClientError('timeout', 'x')).cause).toBeUndefined();
  });

  it('turns anything else into StoreIOError naming the original', () => {
    const rebuilt = roundTrip(new RangeError('odd'));
    expect(rebuilt).toBeInstanceOf(StoreIOError);
    expect(rebuilt.message).toContain('RangeError: odd');
  });
});
