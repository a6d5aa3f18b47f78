import { secp256k1 } from '@noble/curves/secp256k1.js';
import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';
import { HDKey } from '@scure/bip32';
import { describe, expect, it } from 'vitest';
import {
  deriveVssKeys,
  InvalidCryptoInputError,
  KeyObfuscator,
  lnurlLinkingKey,
  lnurlLinkingPath,
  parseExtendedPrivateKey,
  sigsAuthorizationValue,
} from '../../src/crypto/index.js';

const SEED_COUNTING = Uint8Array.from({ length: 64 }, (_, i) => i);
const SEED_2A = new Uint8Array(64).fill(0x2a);
const MONITOR = 'deadbeef'.repeat(8) + '_1';

describe('deriveVssKeys matches LDK Node (spec §B3 tables)', () => {
  const keys = deriveVssKeys(SEED_COUNTING);

  it('derives m/877\' and the data/obfuscation keys', () => {
    expect(bytesToHex(HDKey.fromMasterSeed(SEED_COUNTING).derive("m/877'").privateKey!)).toBe(
      '7480a4d09b808fe859b1f88052313502a78cab0259c4c776c043f6ff40e4f2db',
    );
    expect(bytesToHex(keys.dataEncryptionKey)).toBe('06a3a00e784168944b91340ef9c420c749e76b2701637b9b80bb913ae754e999');
    expect(bytesToHex(keys.obfuscationMasterKey)).toBe('4fb39bc6cf0a92c707a8933ecb1ace12769011b12305f31133182b885417d067');
  });

  it('derives the sigs-auth key m/877\'/139\' and the LNURL parent m/877\'/138\'', () => {
    expect(bytesToHex(keys.sigsAuthSecretKey)).toBe('b57e64fe9c1607bf6bab746d4739541cd2fd6b6cefb3564e6b9940528f9d2c82');
    expect(bytesToHex(secp256k1.getPublicKey(keys.sigsAuthSecretKey, true))).toBe(
      '0257401ab7590ba9b8c3a590ec10247f791e3da7eeb3a1bf33ae0268bd2d7e5272',
    );
    expect(bytesToHex(keys.lnurlAuthParentKey.privateKey!)).toBe('bb5394722026351dd4819a6d30788f70a4bdacf29fe4193cb02563382174a053');
    expect(bytesToHex(keys.lnurlAuthParentKey.deriveChild(0).privateKey!)).toBe(
      '54d940dcbe9c509639d0e7b323912c6038df9eeafd0aa7d63a5bdc20ff37d55c',
    );
  });

  it('derives the LUD-05 linking path and key for vss.example.com', () => {
    const hashing = keys.lnurlAuthParentKey.deriveChild(0).privateKey!;
    expect(lnurlLinkingPath(hashing, 'vss.example.com')).toEqual([2142504891, 305146821, 1246337304, 2885430145]);
    expect(bytesToHex(lnurlLinkingKey(keys.lnurlAuthParentKey, 'vss.example.com').publicKey!)).toBe(
      '02e95f0d8b01fd136b7fffb93636b6c88dcca0778e65d43ad74ef51b7b828247d4',
    );
  });

  it('produces the V1 and V0 store keys of the tables', () => {
    const o = new KeyObfuscator(keys.obfuscationMasterKey);
    const root = o.obfuscate('#');
    expect(`${root}#${o.obfuscate('vss_schema_version')}`).toBe(
      'zAFWxEyRX5by7HK/cWKE1BNnGT3uYb0mo26LYuK7AvrIxdzgx0hugSW1+6pD#VTPFTAJaU/exWkbWSsfSGZP2KebniIRaXoZSRE0u0+RNMgLe4ygCFsy9cJE+8EioW06pDSl67QiwUiK0Pug',
    );
    expect(`${root}#${o.obfuscate('manager')}`).toBe(
      'zAFWxEyRX5by7HK/cWKE1BNnGT3uYb0mo26LYuK7AvrIxdzgx0hugSW1+6pD#Vl6GlKf1fo6OxqCoqWahsOd/66y9GcMpNBEnlmtlr3+aw553TsZrSGYw2wdFsLbkbFIW',
    );
    expect(o.obfuscate('monitors#')).toBe('IypYfetDVHWBNmZlyBjDQnuIsNc9Ih1t3ddR9RIq5F4Vg08lDvzjNQ+gAGXzws61BPMJeoY');
    expect(`${o.obfuscate('monitors#')}#${o.obfuscate(MONITOR)}`).toBe(
      'IypYfetDVHWBNmZlyBjDQnuIsNc9Ih1t3ddR9RIq5F4Vg08lDvzjNQ+gAGXzws61BPMJeoY#KJTj2mQoMbnRaxcGEKBi+lJy7wZfXWAIsGXU6jAgRuIWBoGvC4AtvT0YbthUljGEUn/uGLP3y8v/+jRwqc8fHmpPUFQZcJdlNlnChY1yyBwLqs2mz7gTH6wln3w2I6Ch18BAXJVl4xSPlX4rFus',
    );
    expect(o.obfuscate('manager')).toBe('Vl6GlKf1fo6OxqCoqWahsOd/66y9GcMpNBEnlmtlr3+aw553TsZrSGYw2wdFsLbkbFIW');
    expect(`monitors##${o.obfuscate(MONITOR)}`.startsWith('monitors##KJTj2mQo')).toBe(true);
  });

  it('produces the sigs-auth header of the table at 1700000000', () => {
    expect(sigsAuthorizationValue(keys.sigsAuthSecretKey, 1_700_000_000)).toBe(
      '0257401ab7590ba9b8c3a590ec10247f791e3da7eeb3a1bf33ae0268bd2d7e5272a0a92fbb78f56243b7e52ef4cbc55f262b09e6ec553c6cbbefe414d4b465dac2717c45eb917b42a439cca65c7face88e9c5feeb36c47e040ec90245654f675fb1700000000',
    );
  });

  it('matches the table for seed [0x2a; 64]', () => {
    const k = deriveVssKeys(SEED_2A);
    expect(bytesToHex(HDKey.fromMasterSeed(SEED_2A).derive("m/877'").privateKey!)).toBe(
      '517657c48fba2f9360d5e8e0e0aa9ace8e23c1d50015a917454018d7195570f6',
    );
    expect(bytesToHex(k.dataEncryptionKey)).toBe('00356039b25994182ddc0b2eaa4df7e84e5b48220ab4e116569b7163bd720ed7');
    expect(bytesToHex(k.obfuscationMasterKey)).toBe('37c7d1095f22681dd9e4c779ef63ebfa581b50ef4291f2c963a0ffb08bab9825');
    const o = new KeyObfuscator(k.obfuscationMasterKey);
    expect(`${o.obfuscate('#')}#${o.obfuscate('vss_schema_version')}`).toBe(
      'FlaQlIxm2HMki9qWXRa3e1AiTVJzQWGKzoV0jvKFLU9oJykhx9rUO1XNzf0M#kog6kp7sob7d18fs5KlGs5B5P+jaj3EQdGtSaKICMqX7+9lLTtpmLHcU8R23DWR0InebwtV09u3Db3HuSUY',
    );
    expect(bytesToHex(secp256k1.getPublicKey(k.sigsAuthSecretKey, true))).toBe(
      '03ba4c193cf9a83b1392480b29566bac537a75582b9f12dc008292ca5684fbd048',
    );
  });

  it('rejects seeds that are not 64 bytes', () => {
    expect(() => deriveVssKeys(new Uint8Array(32))).toThrow(InvalidCryptoInputError);
    expect(() => deriveVssKeys(new Uint8Array(65))).toThrow(InvalidCryptoInputError);
    // Right length, wrong type: the message must say the type, not "64 bytes, got 64".
    expect(() => deriveVssKeys(Array.from({ length: 64 }, () => 0) as unknown as Uint8Array)).toThrow(/must be a Uint8Array.*got an array/);
    expect(() => deriveVssKeys('00'.repeat(64) as unknown as Uint8Array)).toThrow(/must be a Uint8Array.*got string/);
  });
});

describe('parseExtendedPrivateKey', () => {
  it('accepts mainnet xprv and testnet tprv serializations of the same key', () => {
    const parent = deriveVssKeys(SEED_COUNTING).lnurlAuthParentKey;
    const xprv = parent.privateExtendedKey;
    expect(xprv.startsWith('xprv')).toBe(true);
    expect(bytesToHex(parseExtendedPrivateKey(xprv).privateKey!)).toBe(bytesToHex(parent.privateKey!));
    const testnet = { private: 0x04358394, public: 0x043587cf };
    const tprv = HDKey.fromMasterSeed(hexToBytes('ab'.repeat(32)), testnet).privateExtendedKey;
    expect(tprv.startsWith('tprv')).toBe(true);
    expect(parseExtendedPrivateKey(tprv).privateKey).toEqual(HDKey.fromMasterSeed(hexToBytes('ab'.repeat(32))).privateKey);
  });

  it('rejects public keys and garbage with a typed error', () => {
    const parent = deriveVssKeys(SEED_COUNTING).lnurlAuthParentKey;
    expect(() => parseExtendedPrivateKey(parent.publicExtendedKey)).toThrow(/PRIVATE/);
    expect(() => parseExtendedPrivateKey('xprv-not-a-key')).toThrow(InvalidCryptoInputError);
  });
});
