/**
 * A server's ErrorResponse.message is untrusted text: error messages (which end up in logs)
 * quote a bounded, single-line form of it, while `serverMessage` keeps it exactly as sent.
 */
import { describe, expect, it } from 'vitest';
import { NoSuchKeyError, NO_RETRY, VssClient, VssClientError, VssServerError } from '../../src/client/index.js';
import { vss } from '../../src/protocol/index.js';
import { errorReply, mockFetch } from './mock-vss.js';

const BASE = 'http://vss.test/vss';

async function failure(message: string, code: number = vss.ErrorCode.NO_SUCH_KEY_EXCEPTION): Promise<Error> {
  const { fetch } = mockFetch(() => errorReply(404, code, message));
  return new VssClient(BASE, { fetch, retryPolicy: NO_RETRY }).getObject({ storeId: 's', key: 'k' }).then(
    () => {
      throw new Error('expected the call to fail');
    },
    (e: Error) => e,
  );
}

describe('server messages in client errors', () => {
  it('quotes at most 1,000 characters of a huge message, with its length, and keeps it whole in serverMessage', async () => {
    const huge = 'x'.repeat(5_000_000);
    const error = (await failure(huge)) as NoSuchKeyError;
    expect(error).toBeInstanceOf(NoSuchKeyError);
    expect(error.serverMessage).toBe(huge);
    expect(error.message).toBe(`Requested key does not exist: ${'x'.repeat(1000)}… (5000000 characters)`);
  });

  it('writes control characters, line separators and bidi overrides as escapes, so a message cannot forge log lines or drive a terminal', async () => {
    const hostile = 'not found\n2026-01-01 INFO payment sent\u001b[2J\u2028\u202e';
    const error = (await failure(hostile)) as VssServerError;
    expect(error.serverMessage).toBe(hostile);
    expect(error.message).toBe('Requested key does not exist: not found\\u000a2026-01-01 INFO payment sent\\u001b[2J\\u2028\\u202e');
  });

  it('does the same for an unknown error code', async () => {
    const error = (await failure(`${'y'.repeat(2000)}\r\n`, 77)) as VssClientError;
    expect(error).toBeInstanceOf(VssClientError);
    expect(error.reason).toBe('unknown-error-code');
    expect(error.message).toContain(`message: ${'y'.repeat(1000)}… (2002 characters) (HTTP 404`);
    expect(error.message.length).toBeLessThan(1400);
  });

  it('leaves an ordinary message as the reference shows it', async () => {
    expect((await failure('Requested key not found.')).message).toBe('Requested key does not exist: Requested key not found.');
    // A surrogate pair cut by the bound is dropped whole, not left half.
    const emoji = (await failure(`${'z'.repeat(999)}😀tail`)) as VssServerError;
    expect(emoji.message).toBe(`Requested key does not exist: ${'z'.repeat(999)}… (1005 characters)`);
  });
});
