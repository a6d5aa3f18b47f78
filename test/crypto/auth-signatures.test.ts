import { secp256k1 } from '@noble/curves/secp256k1.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { HDKey } from '@scure/bip32';
import { describe, expect, it } from 'vitest';
import {
  InvalidCryptoInputError,
  lnurlLinkingPath,
  parseLnurlChallenge,
  SIGS_AUTH_SIGNING_CONSTANT,
  sigsAuthorizationValue,
  sigsAuthPreimage,
  signLnurl,
} from '../../src/crypto/index.js';

const K1 = 'e2af6254a8df433264fa23f67eb8188635d15ce883e8fc020989d5f82ae6f11e';
const PARENT_AB = HDKey.fromMasterSeed(new Uint8Array(32).fill(0xab));

describe('LNURL-auth (LUD-05) signing', () => {
  it('derives the upstream linking path for site.com', () => {
    const hashingKey = hexToBytes('7d417a6a5e9a6a4a879aeaba11a11838764c8fa2b959c242d43dea682b3e409b');
    expect(lnurlLinkingPath(hashingKey, 'site.com')).toEqual([1588488367, 2659270754, 38110259, 4136336762]);
  });

  it('signs the upstream challenge byte for byte', () => {
    expect(bytesToHex(PARENT_AB.deriveChild(0).privateKey!)).toBe('2b733e30d10c230d9ce6727ccdb7ff83a7593c483746eac5e4852441a3e5d862');
    expect(lnurlLinkingPath(PARENT_AB.deriveChild(0).privateKey!, 'example.com')).toEqual([
      2122582311, 2620323162, 199804531, 4102355096,
    ]);
    expect(signLnurl(PARENT_AB, `https://example.com/path?tag=login&k1=${K1}`)).toBe(
      `https://example.com/path?tag=login&k1=${K1}&sig=3045022100a75df468de452e618edb8030016eb0894204655c7d93ece1be007fcf36843522022048bc2f00a0a5a30601d274b49cfaf9ef4c76176e5401d0dfb195f5d6ab8ab4c4&key=02d9eb1b467517d685e3b5439082c14bb1a2c9ae672df4d9046d208c193a5846e0`,
    );
  });

  it('produces a DER signature over the raw k1 that verifies under the appended key', () => {
    const signed = new URL(signLnurl(PARENT_AB, `http://127.0.0.1:9999/auth?k1=${K1}`));
    const sig = hexToBytes(signed.searchParams.get('sig')!);
    const key = hexToBytes(signed.searchParams.get('key')!);
    expect(secp256k1.verify(sig, hexToBytes(K1), key, { prehash: false, format: 'der' })).toBe(true);
    expect(secp256k1.verify(sig, sha256(hexToBytes(K1)), key, { prehash: false, format: 'der' })).toBe(false);
  });

  it('takes the domain as written: host only, no port or userinfo, case preserved', () => {
    expect(parseLnurlChallenge(`https://user:pw@Example.COM:8443/x?k1=${K1}`).domain).toBe('Example.COM');
    expect(parseLnurlChallenge(`  http://localhost:1234/a/b?tag=login&k1=${K1}  `).domain).toBe('localhost');
    expect(parseLnurlChallenge(`http://[::1]:80/?k1=${K1}`).domain).toBe('[::1]');
    // Different case → different linking key, exactly as the reference.
    const lower = new URL(signLnurl(PARENT_AB, `https://example.com/?k1=${K1}`)).searchParams.get('key');
    const upper = new URL(signLnurl(PARENT_AB, `https://EXAMPLE.com/?k1=${K1}`)).searchParams.get('key');
    expect(lower).not.toBe(upper);
  });

  it('inserts sig and key before a fragment and uses the first k1', () => {
    const signed = signLnurl(PARENT_AB, `https://example.com/p?k1=${K1}&k1=${'00'.repeat(32)}#frag`);
    expect(signed).toMatch(new RegExp(`^https://example.com/p\\?k1=${K1}&k1=0{64}&sig=[0-9a-f]+&key=[0-9a-f]{66}#frag$`));
    expect(parseLnurlChallenge(`https://e.com/?k1=${K1.toUpperCase()}`).k1).toEqual(hexToBytes(K1));
  });

  it('rejects unusable challenges with a typed error', () => {
    for (const bad of [
      'https://example.com/path?tag=login',
      `https://example.com/path?k1=${K1.slice(2)}`,
      `https://example.com/path?k1=${'zz'.repeat(32)}`,
      `example.com/path?k1=${K1}`,
      `https://exämple.com/?k1=${K1}`,
      `https://:80/?k1=${K1}`,
      'https://example.com/?k1=%zz',
    ]) {
      expect(() => signLnurl(PARENT_AB, bad), bad).toThrow(InvalidCryptoInputError);
    }
  });
});

describe('sigs-auth Authorization value', () => {
  const SECRET = new Uint8Array(32).fill(42);

  it('matches the derived vector for secret [42; 32] at 1700000000', () => {
    expect(sigsAuthorizationValue(SECRET, 1_700_000_000)).toBe(
      '035be5e9478209674a96e60f1f037f6176540fd001fa1d64694770c56a7709c42cfacd4f04afbbcd95d4bc143df56507f6407bd2a981ca10f216eb8888f7ceb7117795ae377c33e6304af9c82f07e76408c9e846214fd4126e5f771626852e0d801700000000',
    );
  });

  it('uses the 64-byte reference constant', () => {
    expect(bytesToHex(SIGS_AUTH_SIGNING_CONSTANT)).toBe(
      '565353205369676e617475726520417574686f72697a6572205369676e696e672053616c7420436f6e7374616e74' + '2e'.repeat(18),
    );
  });

  it('verifies the way the reference server checks it', () => {
    for (const now of [0, 1, 1_700_000_000, 4_102_444_800]) {
      const header = sigsAuthorizationValue(SECRET, now);
      expect(header.length).toBeGreaterThan(194);
      const pubkey = hexToBytes(header.slice(0, 66));
      const signature = hexToBytes(header.slice(66, 194));
      const seconds = Number(header.slice(194));
      expect(seconds).toBe(now);
      expect(secp256k1.verify(signature, sha256(sigsAuthPreimage(pubkey, seconds)), pubkey, { prehash: false })).toBe(true);
      // A different timestamp does not verify with the same signature.
      expect(secp256k1.verify(signature, sha256(sigsAuthPreimage(pubkey, seconds + 1)), pubkey, { prehash: false })).toBe(false);
    }
  });

  it('rejects invalid secret keys and timestamps', () => {
    expect(() => sigsAuthorizationValue(new Uint8Array(32), 1)).toThrow(InvalidCryptoInputError);
    expect(() => sigsAuthorizationValue(SECRET, -1)).toThrow(InvalidCryptoInputError);
    expect(() => sigsAuthorizationValue(SECRET, 1.5)).toThrow(InvalidCryptoInputError);
  });
});
