/**
 * An LNURL server's text in error messages is cut and escaped exactly as a VSS server's message
 * is (one helper, `shownServerText`): a cut quote ends with the text's full length.
 */
import { HDKey } from '@scure/bip32';
import { afterEach, describe, expect, it } from 'vitest';
import { HeaderProviderError, LnurlAuthJwtProvider } from '../../src/client/index.js';
import { startLnurlServer, type LnurlServer } from './lnurl-server.js';

describe('LnurlAuthJwtProvider quoting a long reason', () => {
  let server: LnurlServer | undefined;
  afterEach(async () => {
    await server?.close();
    server = undefined;
  });
  const parent = HDKey.fromMasterSeed(new Uint8Array(32).fill(3));

  it('shows its first 200 characters and its full length', async () => {
    const reason = `\x1b[31m${'r'.repeat(5_000)}`;
    server = await startLnurlServer(() => ({ status: 403, body: JSON.stringify({ status: 'ERROR', reason }) }));
    const error = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect((error as HeaderProviderError).reason).toBe('authorization');
    expect((error as Error).message).toBe(`LNURL Auth failed, reason is: \\u001b[31m${'r'.repeat(195)}… (5005 characters)`);
  });

  it('shows a short reason whole', async () => {
    server = await startLnurlServer(() => ({ status: 403, body: JSON.stringify({ status: 'ERROR', reason: 'r'.repeat(200) }) }));
    const error = await new LnurlAuthJwtProvider(parent, server.url).getHeaders().catch((e: unknown) => e);
    expect((error as Error).message).toBe(`LNURL Auth failed, reason is: ${'r'.repeat(200)}`);
  });
});
