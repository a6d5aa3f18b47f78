import { describe, expect, it } from 'vitest';
import { deriveVssKeys, KeyObfuscator } from '../../src/crypto/index.js';
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
    for (const bad of [[2, 0], [1], [1, 1], [1, 0, 0], []]) expect(() => decodeSchemaVersion(new Uint8Array(bad))).toThrow(DataIntegrityError);
  });
});
