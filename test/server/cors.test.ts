/**
 * CORS details a browser wallet depends on: a preflight allows every header the client will
 * send (its header provider may add more than authorization and content-type), and origins
 * are configured the way browsers spell them.
 */
import { describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { loadServeConfig } from '../../src/server/config.js';
import { startVssServer } from '../../src/server/index.js';
import { send } from './helpers.js';

describe('CORS preflight', () => {
  it('allows the headers an allowed origin asks for, besides authorization and content-type', async () => {
    const server = await startVssServer({ auth: { kind: 'noop' }, corsOrigins: ['https://wallet.example'] });
    try {
      const preflight = await send(`${server.url}/putObjects`, undefined, {
        method: 'OPTIONS',
        headers: {
          origin: 'https://wallet.example',
          'access-control-request-method': 'POST',
          'access-control-request-headers': 'authorization,content-type,x-api-key',
        },
      });
      expect(preflight.status).toBe(204);
      const allowed = String(preflight.headers['access-control-allow-headers'])
        .split(',')
        .map((name) => name.trim().toLowerCase());
      expect(allowed).toEqual(expect.arrayContaining(['authorization', 'content-type', 'x-api-key']));
      expect(String(preflight.headers.vary).toLowerCase()).toContain('access-control-request-headers');

      // The actual request from that origin then works and exposes the protocol header.
      const actual = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), {
        headers: { origin: 'https://wallet.example', 'x-api-key': 'k', 'content-type': 'application/octet-stream' },
      });
      expect(actual.status).toBe(200);
      expect(actual.headers['access-control-allow-origin']).toBe('https://wallet.example');

      // Another origin asking the same gets no CORS grant at all.
      const evil = await send(`${server.url}/putObjects`, undefined, {
        method: 'OPTIONS',
        headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'x-api-key' },
      });
      expect(evil.headers['access-control-allow-origin']).toBeUndefined();
      expect(evil.headers['access-control-allow-headers']).toBeUndefined();
    } finally {
      await server.close();
    }
  });
});

describe('VSS_CORS_ORIGINS', () => {
  it('accepts origins with upper case or the default port and matches them as browsers send them', async () => {
    const { corsOrigins } = loadServeConfig({ VSS_CORS_ORIGINS: 'https://Wallet.Example, https://pay.example:443, http://localhost:3000/' }).options;
    expect(corsOrigins).toEqual(['https://wallet.example', 'https://pay.example', 'http://localhost:3000']);
    const server = await startVssServer({ auth: { kind: 'noop' }, corsOrigins });
    try {
      for (const origin of ['https://wallet.example', 'https://pay.example']) {
        const response = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), { headers: { origin } });
        expect(response.headers['access-control-allow-origin']).toBe(origin);
      }
    } finally {
      await server.close();
    }
  });

  it('accepts browser-extension wallets (chrome-extension://<id> and the like) and matches the Origin they send', async () => {
    const listed = 'chrome-extension://abcdefghijklmnopabcdefghijklmnop, moz-extension://0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/, safari-web-extension://ABCDEF12-3456';
    const { corsOrigins } = loadServeConfig({ VSS_CORS_ORIGINS: listed }).options;
    expect(corsOrigins).toEqual(['chrome-extension://abcdefghijklmnopabcdefghijklmnop', 'moz-extension://0b1c2d3e-aaaa-bbbb-cccc-0123456789ab', 'safari-web-extension://ABCDEF12-3456']);
    const server = await startVssServer({ auth: { kind: 'noop' }, corsOrigins });
    try {
      for (const origin of corsOrigins!) {
        const response = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), { headers: { origin } });
        expect(response.headers['access-control-allow-origin']).toBe(origin);
      }
      const other = await send(`${server.url}/getObject`, vss.GetObjectRequest.encode({ key: 'global_version' }).finish(), { headers: { origin: 'chrome-extension://ponmlkjihgfedcbaponmlkjihgfedcba' } });
      expect(other.headers['access-control-allow-origin']).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it.each(['https://wallet.example/app', 'https://wallet.example?x=1', 'https://user@wallet.example', 'file:///wallet', 'chrome-extension://abc/popup.html', 'chrome-extension://'])('still refuses %s', (origin) => {
    expect(() => loadServeConfig({ VSS_CORS_ORIGINS: origin })).toThrow(/^VSS_CORS_ORIGINS: .*not a bare origin/);
  });
});
