import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { randomBytes as cryptoRandomBytes } from '@noble/hashes/utils.js';
import { bigIntToInt64, int64ToBigInt, vss } from '../protocol/index.js';
import { InvalidCryptoInputError, StorableDecryptionError } from './errors.js';

/** The `cipher_format` string the reference writes (and ignores on read). */
export const STORABLE_CIPHER_FORMAT = 'ChaCha20Poly1305';
const NONCE_LENGTH = 12;
const TAG_LENGTH = 16;
const EMPTY = new Uint8Array(0);

export interface EncryptStorableOptions {
  /** Additional authenticated data; LDK Node V1 uses the full store key, V0 none. */
  aad?: Uint8Array;
  /** Source of the 12-byte nonce; defaults to the platform CSPRNG (`crypto.getRandomValues`). */
  randomBytes?: (n: number) => Uint8Array;
}

export interface DecryptedStorable {
  value: Uint8Array;
  /** The version sealed inside the ciphertext (LDK Node writes -1 and ignores it). */
  version: bigint;
}

function checkDataKey(key: Uint8Array): void {
  if (!(key instanceof Uint8Array) || key.length !== 32) {
    throw new InvalidCryptoInputError('data encryption key must be 32 bytes');
  }
}

/**
 * Seals `value` and `version` into a serialized `Storable`, as vss-client-ng's StorableBuilder
 * does: PlaintextBlob → ChaCha20-Poly1305 under a random 12-byte nonce, tag kept in the
 * metadata rather than appended to the data.
 */
export function encryptStorable(
  value: Uint8Array,
  version: bigint,
  dataEncryptionKey: Uint8Array,
  options: EncryptStorableOptions = {},
): Uint8Array {
  checkDataKey(dataEncryptionKey);
  const nonce = (options.randomBytes ?? cryptoRandomBytes)(NONCE_LENGTH);
  if (!(nonce instanceof Uint8Array) || nonce.length !== NONCE_LENGTH) {
    throw new InvalidCryptoInputError(`randomBytes must return ${NONCE_LENGTH} bytes`);
  }
  const blob = vss.PlaintextBlob.encode({ value, version: bigIntToInt64(version) }).finish();
  const sealed = chacha20poly1305(dataEncryptionKey, nonce, options.aad ?? EMPTY).encrypt(blob);
  return vss.Storable.encode({
    data: sealed.subarray(0, blob.length),
    encryptionMetadata: { cipherFormat: STORABLE_CIPHER_FORMAT, nonce, tag: sealed.subarray(blob.length) },
  }).finish();
}

/**
 * Opens a serialized `Storable`. The nonce comes from the metadata, so v0.3.1-era storables
 * (zero-prefixed nonces) decrypt too. Every failure is a `StorableDecryptionError`; a wrong
 * key, a wrong AAD or tampered bytes never yield plaintext.
 */
export function decryptStorable(storable: Uint8Array, dataEncryptionKey: Uint8Array, aad: Uint8Array = EMPTY): DecryptedStorable {
  checkDataKey(dataEncryptionKey);
  let message: vss.Storable;
  try {
    message = vss.Storable.decode(storable);
  } catch (cause) {
    throw new StorableDecryptionError('decode', 'value is not a serialized Storable', { cause });
  }
  const metadata = message.encryptionMetadata;
  if (!metadata) throw new StorableDecryptionError('metadata', 'Storable has no encryption metadata');
  const nonce = metadata.nonce ?? EMPTY;
  const tag = metadata.tag ?? EMPTY;
  if (nonce.length !== NONCE_LENGTH || tag.length !== TAG_LENGTH) {
    throw new StorableDecryptionError(
      'metadata',
      `Storable metadata has a ${nonce.length}-byte nonce and a ${tag.length}-byte tag (expected ${NONCE_LENGTH} and ${TAG_LENGTH})`,
    );
  }
  const data = message.data ?? EMPTY;
  // The reference keeps the tag in the metadata; the AEAD wants ciphertext ‖ tag.
  const sealed = new Uint8Array(data.length + TAG_LENGTH);
  sealed.set(data, 0);
  sealed.set(tag, data.length);
  let blobBytes: Uint8Array;
  try {
    blobBytes = chacha20poly1305(dataEncryptionKey, nonce, aad).decrypt(sealed, sealed.subarray(0, data.length));
  } catch (cause) {
    throw new StorableDecryptionError('tag', 'Storable failed authentication (wrong key, wrong AAD or tampered)', { cause });
  }
  let blob: vss.PlaintextBlob;
  try {
    blob = vss.PlaintextBlob.decode(blobBytes);
  } catch (cause) {
    throw new StorableDecryptionError('blob', 'decrypted Storable is not a PlaintextBlob', { cause });
  }
  return { value: blob.value, version: int64ToBigInt(blob.version) };
}
