/**
 * A small LNURL-auth endpoint for tests (real HTTP on loopback): `GET /auth` hands out a
 * challenge URL with a fresh k1; `GET /verify` checks the DER signature of k1 under the
 * presented linking key and returns a token minted by `issueToken(linkingKeyHex)`.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { secp256k1 } from '@noble/curves/secp256k1.js';
import { hexToBytes } from '@noble/hashes/utils.js';

export type VerifyReply = (linkingKeyHex: string) => { status?: number; body: string };

export interface LnurlServer {
  url: string;
  /** Headers of every request received, in order, with its path. */
  requests: Array<{ path: string; headers: IncomingHttpHeaders }>;
  /** Linking keys that passed verification, in order. */
  verifiedKeys: string[];
  verifyReply: VerifyReply;
  /** Milliseconds `/verify` waits before answering (to make concurrent callers overlap). */
  verifyDelayMs: number;
  /** The full URL (with query) of the last `/verify` request. */
  lastVerifyUrl?: string;
  /** When set, `/auth` answers this instead of a challenge. */
  challengeReply?: { status: number; body: string };
  close(): Promise<void>;
}

/** Base64url (no padding) of a JSON value or string; JWT parts in tests. */
export const b64url = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** An unsigned test JWT with the given `exp` (seconds), shaped like the reference tests'. */
export const testJwt = (payload: Record<string, unknown>) => `${b64url('ignored')}.${b64url(payload)}.${b64url('ignored')}`;

export async function startLnurlServer(verifyReply: VerifyReply): Promise<LnurlServer> {
  const challenges = new Set<string>();
  const state: Omit<LnurlServer, 'url' | 'close'> = { requests: [], verifiedKeys: [], verifyReply, verifyDelayMs: 0 };
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://placeholder');
    state.requests.push({ path: url.pathname, headers: req.headers });
    if (url.pathname === '/auth') {
      if (state.challengeReply) {
        res.statusCode = state.challengeReply.status;
        res.end(state.challengeReply.body);
        return;
      }
      const k1 = randomBytes(32).toString('hex');
      challenges.add(k1);
      res.end(`http://127.0.0.1:${(server.address() as AddressInfo).port}/verify?tag=login&k1=${k1}`);
      return;
    }
    if (url.pathname === '/verify') {
      state.lastVerifyUrl = req.url;
      const k1 = url.searchParams.get('k1') ?? '';
      const sig = url.searchParams.get('sig') ?? '';
      const key = url.searchParams.get('key') ?? '';
      let valid = false;
      try {
        valid = challenges.delete(k1) && secp256k1.verify(hexToBytes(sig), hexToBytes(k1), hexToBytes(key), { prehash: false, format: 'der' });
      } catch {
        valid = false;
      }
      if (!valid) {
        res.statusCode = 400;
        res.end(JSON.stringify({ status: 'ERROR', reason: 'bad signature' }));
        return;
      }
      state.verifiedKeys.push(key);
      const reply = state.verifyReply(key);
      setTimeout(() => {
        res.statusCode = reply.status ?? 200;
        res.end(reply.body);
      }, state.verifyDelayMs);
      return;
    }
    res.statusCode = 404;
    res.end('not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const result = state as LnurlServer;
  result.url = `http://127.0.0.1:${port}/auth`;
  result.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return result;
}
