import { describe, expect, it } from 'vitest';
import { decryptStorable, deriveVssKeys, encryptStorable, KeyObfuscator, StorableDecryptionError } from '../../src/crypto/index.js';
import { DataIntegrityError, decodeSchemaVersion, encodeSchemaVersion, StoreLayout } from '../../src/store/index.js';
import { SPEC_MONITOR as MONITOR, SPEC_SEED as SEED, V0_MANAGER, V1_MANAGER, V1_MONITOR, V1_SCHEMA_KEY } from './helpers/vectors.js';

const obfuscator = new KeyObfuscator(deriveVssKeys(SEED).obfuscationMasterKey);
const utf8 = (s: string) => new TextEncoder().encode(s);

describe('V1 layout (LDK Node current)', () => {
  const layout = new StoreLayout(1, obfuscator);

  it('produces the spec vectors for the marker, the manager and a monitor, with AAD = store key', () => {
    expect(layout.schemaMarker()).toEqual({ storeKey: V1_SCHEMA_KEY, aad: utf8(V1_SCHEMA_KEY) });
    expect(layout.address('', '', 'manager')).toEqual({ storeKey: V1_MANAGER, aad: utf8(V1_MANAGER) });
    expect(layout.address('monitors', '', MONITOR).storeKey).toBe(V1_MONITOR);
  });

  it('lists by the obfuscated namespace and recognises only exact members', () => {
    expect(layout.listPrefix('monitors', '')).toBe(`${V1_MONITOR.split('#')[0]}#`);
    expect(layout.keyInNamespace(V1_MONITOR, 'monitors', '')).toBe(MONITOR);
    expect(layout.keyInNamespace(V1_MONITOR, 'monitors', 'x')).toBeUndefined();
    expect(layout.keyInNamespace(V1_MANAGER, '', '')).toBe('manager');
  });

  it('parses listed keys back to their full address', () => {
    expect(layout.parse(V1_MONITOR)).toEqual({ primaryNamespace: 'monitors', secondaryNamespace: '', key: MONITOR });
    expect(layout.parse(layout.address('a', 'b', 'c').storeKey)).toEqual({ primaryNamespace: 'a', secondaryNamespace: 'b', key: 'c' });
  });

  it('keeps the longest LDK address within vss-server\'s 600-character key column', () => {
    expect(layout.address('A'.repeat(120), 'B'.repeat(120), 'C'.repeat(120)).storeKey).toHaveLength(600);
  });

  it('rejects foreign or malformed keys with DataIntegrityError', () => {
    const foreign = new StoreLayout(1, new KeyObfuscator(new Uint8Array(32).fill(1)));
    expect(() => foreign.parse(V1_MONITOR)).toThrow(DataIntegrityError);
    expect(() => layout.parse('no-hash-here')).toThrow(DataIntegrityError);
    expect(() => layout.keyInNamespace(`${V1_MONITOR.split('#')[0]}#garbage`, 'monitors', '')).toThrow(DataIntegrityError);
  });

  it('quotes a huge server-listed key in bounded form, with its length', () => {
    // A hostile server may list a key of megabytes; each error (and its log lines) quotes its start.
    for (const huge of ['x'.repeat(4_000_000), `${'y'.repeat(3_000_000)}#${'z'.repeat(1_000_000)}`]) {
      const error = (() => {
        try {
          layout.parse(huge);
        } catch (e) {
          return e as Error;
        }
      })();
      expect(error).toBeInstanceOf(DataIntegrityError);
      expect(error!.message.length).toBeLessThan(400);
      expect(error!.message).toContain(`(${huge.length} characters)`);
    }
  });
});

describe('V0 layout (ldk-node ≤ 0.6)', () => {
  const layout = new StoreLayout(0, obfuscator);

  it('keeps namespaces in plaintext, root keys bare, and uses empty AAD', () => {
    expect(layout.address('', '', 'manager')).toEqual({ storeKey: V0_MANAGER, aad: new Uint8Array() });
    expect(layout.address('monitors', '', MONITOR).storeKey).toBe(`monitors##${V1_MONITOR.split('#')[1]}`);
    expect(layout.address('bdk_wallet', '', 'descriptor').storeKey.startsWith('bdk_wallet##')).toBe(true);
  });

  it('matches exactly one namespace (stricter than LDK Node\'s plain prefix)', () => {
    const sibling = layout.address('a', 'bc', 'k').storeKey;
    expect(layout.listPrefix('a', 'b')).toBe('a#b#');
    expect(layout.keyInNamespace(sibling, 'a', 'b')).toBeUndefined();
    expect(layout.keyInNamespace(sibling, 'a', 'bc')).toBe('k');
    expect(layout.listPrefix('', '')).toBeUndefined();
    expect(layout.keyInNamespace(V0_MANAGER, '', '')).toBe('manager');
    expect(layout.keyInNamespace(sibling, '', '')).toBeUndefined();
  });

  it('parses root and namespaced keys', () => {
    expect(layout.parse(V0_MANAGER)).toEqual({ primaryNamespace: '', secondaryNamespace: '', key: 'manager' });
    expect(layout.parse(layout.address('payments', '', 'ab12').storeKey)).toEqual({ primaryNamespace: 'payments', secondaryNamespace: '', key: 'ab12' });
    expect(() => layout.parse('a#b')).toThrow(DataIntegrityError);
  });
});

describe('schema version marker', () => {
  it('encodes V1 as 01 00 and V0 as 00 00, and rejects anything else', () => {
    expect(encodeSchemaVersion(1)).toEqual(new Uint8Array([1, 0]));
    expect(encodeSchemaVersion(0)).toEqual(new Uint8Array([0, 0]));
    expect(decodeSchemaVersion(new Uint8Array([1, 0]))).toBe(1);
    expect(decodeSchemaVersion(new Uint8Array([0, 0]))).toBe(0);
    for (const bad of [[2, 0], [1], [1, 1], []]) expect(() => decodeSchemaVersion(new Uint8Array(bad))).toThrow(DataIntegrityError);
  });

  it('reads the marker as LDK does: optional (odd) TLVs skipped, bytes after the stream not read', () => {
    expect(decodeSchemaVersion(new Uint8Array([1, 3, 1, 1, 0xaa]))).toBe(1);
    expect(decodeSchemaVersion(new Uint8Array([0, 6, 1, 0, 3, 2, 0xaa, 0xbb]))).toBe(0);
    expect(decodeSchemaVersion(new Uint8Array([1, 0, 0]))).toBe(1);
    // Three-byte BigSizes: a 253-byte stream holding odd type 253 with a 249-byte value.
    expect(decodeSchemaVersion(new Uint8Array([1, 0xfd, 0x00, 0xfd, 0xfd, 0x00, 0xfd, 0xf9, ...new Uint8Array(0xf9)]))).toBe(1);
  });

  it.each([
    ['an unknown required (even) TLV', [1, 2, 2, 0]],
    ['TLV types out of order', [1, 4, 3, 0, 1, 0]],
    ['a repeated TLV type', [1, 4, 1, 0, 1, 0]],
    ['a TLV record longer than its stream', [1, 3, 1, 5, 0]],
    ['a stream longer than the marker', [1, 5, 1, 0]],
    ['a non-canonical BigSize', [1, 0xfd, 0x00, 0x01, 0]],
  ])('rejects a marker with %s', (_name, bad) => {
    expect(() => decodeSchemaVersion(new Uint8Array(bad))).toThrow(DataIntegrityError);
  });
});

describe('addresses never collide and AAD binds a value to its schema and address', () => {
  const v1 = new StoreLayout(1, obfuscator);
  const v0 = new StoreLayout(0, obfuscator);
  const dataKey = deriveVssKeys(SEED).dataEncryptionKey;

  it('gives distinct store keys to addresses whose joined text would look alike', () => {
    const triples: Array<[string, string, string]> = [
      ['', '', 'a'], ['a', '', 'a'], ['a', 'a', 'a'], ['a', 'b', 'c'], ['a', 'bc', 'd'], ['ab', 'c', 'd'], ['a', '', 'bcd'], ['a', 'b', 'cd'],
    ];
    for (const layout of [v1, v0]) {
      const keys = triples.map(([p, s, k]) => layout.address(p, s, k).storeKey);
      expect(new Set(keys).size).toBe(triples.length);
      // And every one parses back to where it came from.
      triples.forEach(([p, s, k], i) => expect(layout.parse(keys[i])).toEqual({ primaryNamespace: p, secondaryNamespace: s, key: k }));
    }
  });

  it('a V1 value does not open under the V0 AAD or another address, and a V0 value not under the V1 AAD', () => {
    const value = utf8('channel monitor');
    const atV1 = v1.address('monitors', '', MONITOR);
    const atV0 = v0.address('monitors', '', MONITOR);
    const elsewhere = v1.address('monitors', '', 'other');
    expect(atV0.aad).toHaveLength(0);
    const sealedV1 = encryptStorable(value, -1n, dataKey, { aad: atV1.aad });
    expect(decryptStorable(sealedV1, dataKey, atV1.aad).value).toEqual(value);
    expect(() => decryptStorable(sealedV1, dataKey, atV0.aad)).toThrow(StorableDecryptionError);
    expect(() => decryptStorable(sealedV1, dataKey, elsewhere.aad)).toThrow(StorableDecryptionError);
    const sealedV0 = encryptStorable(value, -1n, dataKey, { aad: atV0.aad });
    expect(decryptStorable(sealedV0, dataKey, atV0.aad).value).toEqual(value);
    expect(() => decryptStorable(sealedV0, dataKey, atV1.aad)).toThrow(StorableDecryptionError);
  });
});
