/**
 * An LNURL-auth URL that no request can be sent to is refused when the provider is built. Found
 * at the first request instead, it is a header-provider failure, which the VSS client retries for
 * its whole retry budget (minutes) before the wallet hears of a typo in its configuration.
 */
import { describe, expect, it } from 'vitest';
import { HeaderProviderError, LnurlAuthJwtProvider, vssClientFromConfig, type FetchFunction } from '../../src/client/index.js';
import { deriveVssKeys } from '../../src/crypto/index.js';

const keys = deriveVssKeys(new Uint8Array(64).fill(7));
const parent = keys.lnurlAuthParentKey;

function refusal(build: () => unknown): HeaderProviderError {
  try {
    build();
  } catch (error) {
    expect(error).toBeInstanceOf(HeaderProviderError);
    expect((error as HeaderProviderError).reason).toBe('invalid-data');
    return error as HeaderProviderError;
  }
  throw new Error('expected a HeaderProviderError');
}

describe('LnurlAuthJwtProvider checks its URL when built', () => {
  it('refuses a URL without an http(s) scheme, an unparsable one and a non-string, naming what it got', () => {
    for (const [url, shown] of [
      ['localhost:3000/auth', '"localhost:3000/auth"'],
      ['ftp://example.com/auth', '"ftp://example.com/auth"'],
      ['not a url', '"not a url"'],
      ['https://exa mple.com/auth', '"https://exa mple.com/auth"'],
      ['', '""'],
      [42, 'number'],
      [undefined, 'undefined'],
    ] as const) {
      const error = refusal(() => new LnurlAuthJwtProvider(parent, url as unknown as string));
      expect(error.message, String(url)).toBe(`LNURL-auth URL must be an http(s) URL, got ${shown}`);
    }
  });

  it('refuses a user name or password in the URL without quoting it, unless a fetch of the caller\'s own is given', () => {
    const error = refusal(() => new LnurlAuthJwtProvider(parent, 'https://alice:hunter2@auth.example.com/login?x=1'));
    expect(error.message).toBe(
      'LNURL-auth URL https://auth.example.com/login?… holds a user name or password (not shown), which fetch refuses to send: pass credentials as a default header instead',
    );
    expect(refusal(() => new LnurlAuthJwtProvider(parent, 'alice:hunter2@auth.example.com/login')).message).not.toContain('hunter2');
    const ownFetch: FetchFunction = async () => {
      throw new Error('not called');
    };
    expect(() => new LnurlAuthJwtProvider(parent, 'https://alice:hunter2@auth.example.com/login', {}, { fetch: ownFetch })).not.toThrow();
  });

  it('accepts http and https URLs', () => {
    for (const url of ['http://127.0.0.1:8080/auth', 'https://auth.example.com/login?tag=login', 'HTTPS://AUTH.EXAMPLE.COM/']) {
      expect(() => new LnurlAuthJwtProvider(parent, url), url).not.toThrow();
    }
  });

  it('makes a client config with a bad LNURL URL fail when the client is built', () => {
    const config = { baseUrl: 'http://h/vss', auth: { kind: 'lnurl' as const, parentKey: parent.privateExtendedKey, url: 'h/auth' } };
    expect(() => vssClientFromConfig(config)).toThrow(HeaderProviderError);
  });
});
