import { HARDENED_OFFSET, HDKey } from '@scure/bip32';
import { saltedHmac, utf8Bytes } from './kdf.js';
import { InvalidCryptoInputError } from './errors.js';
import { isUint8Array } from '../protocol/bytes.js';

/** BIP32 hardened child of the master key that LDK Node reserves for VSS. */
export const VSS_HARDENED_CHILD_INDEX = 877;
/** Hardened child of m/877' holding the sigs-auth secret key. */
export const VSS_SIGS_AUTH_HARDENED_CHILD_INDEX = 139;
/** Hardened child of m/877' used as the LNURL-auth parent key. */
export const VSS_LNURL_AUTH_HARDENED_CHILD_INDEX = 138;

/** Every key LDK Node derives from its 64-byte seed for VSS (spec §B3). */
export interface VssKeys {
  /** ChaCha20-Poly1305 key for stored values. */
  dataEncryptionKey: Uint8Array;
  /** Input to `new KeyObfuscator(...)`. */
  obfuscationMasterKey: Uint8Array;
  /** secp256k1 secret of m/877'/139', for `SigsAuthProvider`. */
  sigsAuthSecretKey: Uint8Array;
  /** m/877'/138', for `LnurlAuthJwtProvider`. */
  lnurlAuthParentKey: HDKey;
}

const BIP32_TESTNET_VERSIONS = { private: 0x04358394, public: 0x043587cf };

/**
 * Derives the VSS keys exactly as LDK Node does: the private key of m/877' is the VSS seed,
 * from which the data and obfuscation keys come through the reference's salted HMAC.
 */
export function deriveVssKeys(seed: Uint8Array): VssKeys {
  if (!isUint8Array(seed)) {
    // A number[] or hex string of the right length would otherwise read as "64 bytes, got 64".
    throw new InvalidCryptoInputError(`the seed must be a Uint8Array of 64 bytes, got ${seed === null ? 'null' : Array.isArray(seed) ? 'an array' : typeof seed}`);
  }
  if (seed.length !== 64) throw new InvalidCryptoInputError(`LDK Node seeds are 64 bytes, got ${seed.length}`);
  const vssRoot = HDKey.fromMasterSeed(seed).deriveChild(VSS_HARDENED_CHILD_INDEX + HARDENED_OFFSET);
  const vssSeed = vssRoot.privateKey;
  if (!vssSeed) throw new InvalidCryptoInputError('m/877\' has no private key');
  const prk = saltedHmac(vssSeed, utf8Bytes('pseudo_random_key'));
  const dataEncryptionKey = saltedHmac(prk, utf8Bytes('data_encryption_key'));
  const salt = new Uint8Array(dataEncryptionKey.length + 'obfuscation_key'.length);
  salt.set(dataEncryptionKey);
  salt.set(utf8Bytes('obfuscation_key'), dataEncryptionKey.length);
  const obfuscationMasterKey = saltedHmac(prk, salt);
  const sigsKey = vssRoot.deriveChild(VSS_SIGS_AUTH_HARDENED_CHILD_INDEX + HARDENED_OFFSET).privateKey;
  if (!sigsKey) throw new InvalidCryptoInputError('m/877\'/139\' has no private key');
  return {
    dataEncryptionKey,
    obfuscationMasterKey,
    sigsAuthSecretKey: sigsKey,
    lnurlAuthParentKey: vssRoot.deriveChild(VSS_LNURL_AUTH_HARDENED_CHILD_INDEX + HARDENED_OFFSET),
  };
}

/**
 * Parses a BIP32 extended private key string (mainnet `xprv…` or testnet `tprv…`; the network
 * affects only the serialization, never the keys). This is how an LNURL parent key travels
 * between threads or processes.
 */
export function parseExtendedPrivateKey(extended: string): HDKey {
  let key: HDKey | undefined;
  let firstError: unknown;
  for (const versions of [undefined, BIP32_TESTNET_VERSIONS]) {
    try {
      key = HDKey.fromExtendedKey(extended, versions);
      break;
    } catch (error) {
      firstError ??= error;
    }
  }
  if (!key) throw new InvalidCryptoInputError('not a valid BIP32 extended key', { cause: firstError });
  if (!key.privateKey) throw new InvalidCryptoInputError('an extended PRIVATE key is required, got a public one');
  return key;
}
