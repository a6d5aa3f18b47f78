/**
 * Writes a store exactly as LDK Node does, straight from the spec's algorithms (§B1–B4) on
 * top of the crypto layer and a raw VssClient, independently of VssStore: V1 (obfuscated
 * namespaces, AAD = store key, the schema marker) or V0 (plaintext namespaces, empty AAD,
 * no marker). Every write is unconditional (`version -1`), sealed with version -1.
 */
import { VssClient } from '../../../src/client/index.js';
import { deriveVssKeys, encryptStorable, KeyObfuscator } from '../../../src/crypto/index.js';
import { int64ToBigInt, keyValue } from '../../../src/protocol/index.js';

const utf8 = (s: string) => new TextEncoder().encode(s);

export class LdkNodeStoreWriter {
  readonly obfuscator: KeyObfuscator;
  readonly dataKey: Uint8Array;

  constructor(
    readonly client: VssClient,
    readonly storeId: string,
    seed: Uint8Array,
    readonly schema: 0 | 1,
  ) {
    const keys = deriveVssKeys(seed);
    this.obfuscator = new KeyObfuscator(keys.obfuscationMasterKey);
    this.dataKey = keys.dataEncryptionKey;
  }

  storeKey(primary: string, secondary: string, key: string): string {
    const o = this.obfuscator;
    if (this.schema === 1) return `${o.obfuscate(`${primary}#${secondary}`)}#${o.obfuscate(key)}`;
    return primary === '' ? o.obfuscate(key) : `${primary}#${secondary}#${o.obfuscate(key)}`;
  }

  aad(storeKey: string): Uint8Array {
    return this.schema === 1 ? utf8(storeKey) : new Uint8Array();
  }

  /** The marker always sits at its V1 address; its value names the schema (`01 00` or `00 00`). */
  async writeMarker(): Promise<void> {
    const key = `${this.obfuscator.obfuscate('#')}#${this.obfuscator.obfuscate('vss_schema_version')}`;
    const storable = encryptStorable(new Uint8Array([this.schema, 0]), -1n, this.dataKey, { aad: utf8(key) });
    await this.client.putObjects({ storeId: this.storeId, transactionItems: [keyValue(key, -1n, storable)] });
  }

  async write(primary: string, secondary: string, key: string, value: Uint8Array): Promise<string> {
    const storeKey = this.storeKey(primary, secondary, key);
    const storable = encryptStorable(value, -1n, this.dataKey, { aad: this.aad(storeKey) });
    await this.client.putObjects({ storeId: this.storeId, transactionItems: [keyValue(storeKey, -1n, storable)] });
    return storeKey;
  }
}

/** Every (key, version) of a store, through a raw client. */
export async function rawListing(client: VssClient, storeId: string): Promise<Map<string, bigint>> {
  const out = new Map<string, bigint>();
  let pageToken: string | undefined;
  do {
    const page = await client.listKeyVersions({ storeId, ...(pageToken ? { pageToken } : {}) });
    for (const kv of page.keyVersions) out.set(kv.key ?? '', int64ToBigInt(kv.version));
    pageToken = page.nextPageToken || undefined;
  } while (pageToken);
  return out;
}
