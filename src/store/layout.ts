/**
 * Where LDK Node puts a (primary, secondary, key) address in a VSS store, for both of its
 * schemas (spec §B1), and the `vss_schema_version` marker (spec §B4).
 *
 * - V1 (current): `O("p#s") + "#" + O(key)`, value AAD = the whole store key.
 * - V0 (ldk-node ≤ 0.6): `O(key)` at the root, else `"p#s#" + O(key)` with plaintext
 *   namespaces; empty AAD.
 */
import { InvalidObfuscatedKeyError, type KeyObfuscator } from '../crypto/index.js';
import { quotedPrefix } from '../crypto/text.js';
import { DataIntegrityError } from './errors.js';
import type { StoreKey } from './types.js';

export type SchemaVersion = 0 | 1;

/** The store-wide marker key, at namespace ("", ""), always in the V1 layout. */
export const VSS_SCHEMA_VERSION_KEY = 'vss_schema_version';
/** LDK Node's V0 probe: the plaintext prefix of the BDK wallet namespace. */
export const V0_PROBE_PREFIX = 'bdk_wallet#';

/** LDK serialization of `VssSchemaVersion`: the variant byte, then an empty TLV stream. */
export function encodeSchemaVersion(schema: SchemaVersion): Uint8Array {
  return new Uint8Array([schema, 0]);
}

/**
 * Reads the marker the way LDK Node does (`Readable::read` of an `impl_writeable_tlv_based_enum!`):
 * the variant byte, then a BigSize-length-prefixed TLV stream in which unknown odd types are
 * skipped and unknown even ones are fatal; bytes after the stream are not read. A newer
 * LDK Node that adds optional (odd) fields to the marker therefore still opens here.
 */
export function decodeSchemaVersion(bytes: Uint8Array): SchemaVersion {
  const fail = (why: string): never => {
    throw new DataIntegrityError(`unknown VSS schema version marker ${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}: ${why}`);
  };
  if (bytes.length === 0) fail('empty');
  const variant = bytes[0];
  if (variant !== 0 && variant !== 1) fail(`variant ${variant} is neither V0 (0) nor V1 (1)`);
  let pos = 1;
  // LDK's BigSize: canonical (shortest) big-endian encoding, else the read fails.
  const bigSize = (limit: number): bigint => {
    if (pos >= limit) fail('truncated');
    const first = bytes[pos++];
    const width = first === 0xff ? 8 : first === 0xfe ? 4 : first === 0xfd ? 2 : 0;
    if (width === 0) return BigInt(first);
    if (pos + width > limit) fail('truncated');
    let value = 0n;
    for (let i = 0; i < width; i++) value = (value << 8n) | BigInt(bytes[pos++]);
    if (value < (width === 2 ? 0xfdn : width === 4 ? 0x10000n : 0x100000000n)) fail('non-canonical BigSize');
    return value;
  };
  const streamLength = bigSize(bytes.length);
  if (streamLength > BigInt(bytes.length - pos)) fail('TLV stream is truncated');
  const end = pos + Number(streamLength);
  let lastType = -1n;
  while (pos < end) {
    const type = bigSize(end);
    if (type <= lastType) fail('TLV types are not strictly increasing');
    const length = bigSize(end);
    if (length > BigInt(end - pos)) fail('TLV record is truncated');
    if (type % 2n === 0n) fail(`unknown required (even) TLV type ${type}`);
    pos += Number(length);
    lastType = type;
  }
  return variant as SchemaVersion;
}

/** A value's location on the server and the AAD its ciphertext is bound to. */
export interface StoreAddress {
  storeKey: string;
  aad: Uint8Array;
}

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();
/** Namespace pairs are few; cache their obfuscation (bounded, in case a caller uses many). */
const NAMESPACE_CACHE_LIMIT = 4096;

/** Characters of a server-listed store key quoted in an error (a hostile server may list megabytes). */
const QUOTED_KEY_CHARS = 120;

export class StoreLayout {
  readonly #namespaces = new Map<string, string>();
  readonly #parsedNamespaces = new Map<string, [string, string]>();
  #marker: StoreAddress | undefined;

  constructor(
    readonly schema: SchemaVersion,
    private readonly obfuscator: KeyObfuscator,
  ) {}

  /** The marker's address, identical for both schemas (computed once: every operation checks it). */
  schemaMarker(): StoreAddress {
    if (!this.#marker) {
      const storeKey = `${this.#obfuscatedNamespace('', '')}#${this.obfuscator.obfuscate(VSS_SCHEMA_VERSION_KEY)}`;
      this.#marker = { storeKey, aad: utf8.encode(storeKey) };
    }
    return this.#marker;
  }

  address(primaryNamespace: string, secondaryNamespace: string, key: string): StoreAddress {
    const obfuscatedKey = this.obfuscator.obfuscate(key);
    if (this.schema === 1) {
      const storeKey = `${this.#obfuscatedNamespace(primaryNamespace, secondaryNamespace)}#${obfuscatedKey}`;
      return { storeKey, aad: utf8.encode(storeKey) };
    }
    const storeKey = primaryNamespace === '' ? obfuscatedKey : `${primaryNamespace}#${secondaryNamespace}#${obfuscatedKey}`;
    return { storeKey, aad: EMPTY };
  }

  /**
   * The server-side prefix that selects (p, s), or undefined when the whole store must be
   * listed (V0 root keys have no prefix). Matches are confirmed with `keyInNamespace`.
   */
  listPrefix(primaryNamespace: string, secondaryNamespace: string): string | undefined {
    if (this.schema === 1) return `${this.#obfuscatedNamespace(primaryNamespace, secondaryNamespace)}#`;
    return primaryNamespace === '' ? undefined : `${primaryNamespace}#${secondaryNamespace}#`;
  }

  /**
   * The plaintext key if `storeKey` lies exactly in (p, s), else undefined. Stricter than
   * LDK Node, whose V0 prefixes also match sibling namespaces (`a#b` matches `a#bc#…`) and
   * whose V0 root listing matches nothing.
   */
  keyInNamespace(storeKey: string, primaryNamespace: string, secondaryNamespace: string): string | undefined {
    if (this.schema === 1) {
      const hash = storeKey.indexOf('#');
      if (hash < 0 || storeKey.slice(0, hash) !== this.#obfuscatedNamespace(primaryNamespace, secondaryNamespace)) return undefined;
      return this.#deobfuscate(storeKey.slice(hash + 1), storeKey);
    }
    if (primaryNamespace === '') return storeKey.includes('#') ? undefined : this.#deobfuscate(storeKey, storeKey);
    const prefix = `${primaryNamespace}#${secondaryNamespace}#`;
    if (!storeKey.startsWith(prefix) || storeKey.indexOf('#', prefix.length) >= 0) return undefined;
    return this.#deobfuscate(storeKey.slice(prefix.length), storeKey);
  }

  /** The full address of a listed store key (for `listAll`). */
  parse(storeKey: string): StoreKey {
    if (this.schema === 1) {
      const hash = storeKey.indexOf('#');
      if (hash < 0) throw new DataIntegrityError(`store key ${quotedPrefix(storeKey, QUOTED_KEY_CHARS)} is not in the V1 layout`);
      const [primaryNamespace, secondaryNamespace] = this.#namespaceOf(storeKey.slice(0, hash), storeKey);
      return { primaryNamespace, secondaryNamespace, key: this.#deobfuscate(storeKey.slice(hash + 1), storeKey) };
    }
    const parts = storeKey.split('#');
    if (parts.length === 1) return { primaryNamespace: '', secondaryNamespace: '', key: this.#deobfuscate(storeKey, storeKey) };
    if (parts.length !== 3) throw new DataIntegrityError(`store key ${quotedPrefix(storeKey, QUOTED_KEY_CHARS)} is not in the V0 layout`);
    return { primaryNamespace: parts[0], secondaryNamespace: parts[1], key: this.#deobfuscate(parts[2], storeKey) };
  }

  #obfuscatedNamespace(primaryNamespace: string, secondaryNamespace: string): string {
    const plain = `${primaryNamespace}#${secondaryNamespace}`;
    let obfuscated = this.#namespaces.get(plain);
    if (obfuscated === undefined) {
      if (this.#namespaces.size >= NAMESPACE_CACHE_LIMIT) this.#namespaces.clear();
      obfuscated = this.obfuscator.obfuscate(plain);
      this.#namespaces.set(plain, obfuscated);
    }
    return obfuscated;
  }

  #namespaceOf(obfuscated: string, storeKey: string): [string, string] {
    let pair = this.#parsedNamespaces.get(obfuscated);
    if (!pair) {
      const plain = this.#deobfuscate(obfuscated, storeKey);
      const hash = plain.indexOf('#');
      if (hash < 0) throw new DataIntegrityError(`namespace of store key ${quotedPrefix(storeKey, QUOTED_KEY_CHARS)} has no '#'`);
      pair = [plain.slice(0, hash), plain.slice(hash + 1)];
      if (this.#parsedNamespaces.size >= NAMESPACE_CACHE_LIMIT) this.#parsedNamespaces.clear();
      this.#parsedNamespaces.set(obfuscated, pair);
    }
    return pair;
  }

  #deobfuscate(obfuscated: string, storeKey: string): string {
    try {
      return this.obfuscator.deobfuscate(obfuscated);
    } catch (cause) {
      if (cause instanceof InvalidObfuscatedKeyError) {
        throw new DataIntegrityError(`store key ${quotedPrefix(storeKey, QUOTED_KEY_CHARS)} does not deobfuscate with this key (${cause.reason})`, { cause });
      }
      throw cause;
    }
  }
}
