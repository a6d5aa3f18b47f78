import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { randomBytes as cryptoRandomBytes } from '@noble/hashes/utils.js';
import { bigIntToInt64, INT64_MAX, INT64_MIN, int64ToBigInt, presizedWriter, strictReader, vss } from '../protocol/index.js';
import { isUint8Array } from '../protocol/bytes.js';
import { InvalidCryptoInputError, StorableDecryptionError } from './errors.js';

/** The `cipher_format` string the reference writes (and ignores on read). */
export const STORABLE_CIPHER_FORMAT = 'ChaCha20Poly1305';
const NONCE_LENGTH = 12;
const TAG_LENGTH = 16;
const EMPTY = new Uint8Array(0);
/** Upper bound of a PlaintextBlob's bytes beyond its value (2 tags, a length, an int64). */
const BLOB_OVERHEAD = 1 + 5 + 1 + 10;
/**
 * Upper bound of a Storable's bytes beyond its data (data header + metadata message). The
 * cipher format counts as protobufjs reserves room for a string (3 bytes per character and a
 * 5-byte length): with only its encoded size counted, the writer doubled its value-sized buffer
 * there, and every encrypted value was handed out inside a buffer twice its size.
 */
const STORABLE_OVERHEAD = 1 + 5 + 1 + 1 + (1 + 5 + 3 * STORABLE_CIPHER_FORMAT.length) + (2 + NONCE_LENGTH) + (2 + TAG_LENGTH);


export interface EncryptStorableOptions {
  /** Additional authenticated data; LDK Node V1 uses the full store key, V0 none. */
  aad?: Uint8Array;
  /** Source of the 12-byte nonce; defaults to the platform CSPRNG (`crypto.getRandomValues`, pooled). */
  randomBytes?: (n: number) => Uint8Array;
}

export interface DecryptedStorable {
  value: Uint8Array;
  /** The version sealed inside the ciphertext (LDK Node writes -1 and ignores it). */
  version: bigint;
}

/**
 * Nonces come from a pool filled by the platform CSPRNG in 3 KiB batches: one
 * `crypto.getRandomValues` call costs about as much as encrypting a small value, and every
 * byte is still used exactly once.
 */
const NONCE_POOL_SIZE = 256 * NONCE_LENGTH;
let noncePool = new Uint8Array(0);
let noncePoolOffset = 0;
function pooledNonce(): Uint8Array {
  if (noncePoolOffset + NONCE_LENGTH > noncePool.length) {
    noncePool = cryptoRandomBytes(NONCE_POOL_SIZE);
    noncePoolOffset = 0;
  }
  const nonce = noncePool.slice(noncePoolOffset, noncePoolOffset + NONCE_LENGTH);
  noncePoolOffset += NONCE_LENGTH;
  return nonce;
}

function checkDataKey(key: Uint8Array): void {
  if (!isUint8Array(key) || key.length !== 32) {
    throw new InvalidCryptoInputError('data encryption key must be 32 bytes');
  }
}

/**
 * protobufjs reads a string given for a bytes field as base64 and stores its decoding, and a
 * mistyped AAD would otherwise surface as a failed tag (which reads as tampering), so anything
 * but bytes is refused up front.
 */
function checkBytes(bytes: unknown, what: string): asserts bytes is Uint8Array {
  if (!isUint8Array(bytes)) {
    throw new InvalidCryptoInputError(`${what} must be a Uint8Array, got ${bytes === null ? 'null' : typeof bytes}`);
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
  checkBytes(value, 'value to encrypt');
  // A number would be sealed truncated (1.5 as 1) and a version beyond int64 would fail deep in
  // the encoder with a RangeError: both are refused here, by name.
  if (typeof version !== 'bigint' || version > INT64_MAX || version < INT64_MIN) {
    const got = typeof version === 'bigint' ? String(version) : typeof version === 'number' ? `the number ${version}` : version === null ? 'null' : typeof version;
    throw new InvalidCryptoInputError(`version to seal must be a bigint from -2^63 to 2^63-1, got ${got}`);
  }
  if (options.aad !== undefined) checkBytes(options.aad, 'aad');
  const nonce = options.randomBytes ? options.randomBytes(NONCE_LENGTH) : pooledNonce();
  if (!isUint8Array(nonce) || nonce.length !== NONCE_LENGTH) {
    throw new InvalidCryptoInputError(`randomBytes must return ${NONCE_LENGTH} bytes`);
  }
  // Large values dominate the cost, so each is copied as little as possible: the blob is
  // encoded into a buffer with room for the tag and encrypted in place, and the Storable
  // is encoded into a buffer of the right size (see bench/crypto.ts for the effect).
  const blobWriter = vss.PlaintextBlob.encode(
    { value, version: bigIntToInt64(version) },
    presizedWriter(value.length + BLOB_OVERHEAD + TAG_LENGTH),
  );
  const blobLength = blobWriter.pos;
  const sealed = blobWriter.buf.subarray(0, blobLength + TAG_LENGTH);
  chacha20poly1305(dataEncryptionKey, nonce, options.aad ?? EMPTY).encrypt(sealed.subarray(0, blobLength), sealed);
  return vss.Storable.encode(
    {
      data: sealed.subarray(0, blobLength),
      encryptionMetadata: { cipherFormat: STORABLE_CIPHER_FORMAT, nonce, tag: sealed.subarray(blobLength) },
    },
    presizedWriter(blobLength + STORABLE_OVERHEAD),
  ).finish(true);
}

/**
 * Opens a serialized `Storable`. The nonce comes from the metadata, so v0.3.1-era storables
 * (zero-prefixed nonces) decrypt too. Every failure is a `StorableDecryptionError`; a wrong
 * key, a wrong AAD or tampered bytes never yield plaintext.
 *
 * The Storable and its PlaintextBlob are read as the reference (prost) reads them, so a value
 * opens here exactly when it opens in LDK Node: truncated fields, a known field with the wrong
 * wire type, field number 0, an end-group without its start, an unknown wire type, invalid UTF-8
 * in `cipher_format` and a varint longer than 10 bytes or wider than 64 bits are refused (reason
 * `decode`, or `blob` inside the ciphertext), with the decoder's finding and the byte offset in
 * the message. Unknown fields are skipped, and a repeated field counts as protobuf says (the last
 * `data` wins, repeated metadata merges): prost accepts both, and the AEAD covers the data, nonce
 * and tag whichever occurrence supplies them, so neither can smuggle in unauthenticated bytes.
 */
export function decryptStorable(storable: Uint8Array, dataEncryptionKey: Uint8Array, aad: Uint8Array = EMPTY): DecryptedStorable {
  checkDataKey(dataEncryptionKey);
  checkBytes(storable, 'storable to decrypt');
  checkBytes(aad, 'aad');
  const reader = strictReader(storable);
  let message: vss.Storable;
  try {
    message = vss.Storable.decode(reader);
  } catch (cause) {
    throw new StorableDecryptionError('decode', `value is not a serialized Storable: ${decodeFailure(cause, reader, storable.length)}`, { cause });
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
    // cipher_format is not checked (the reference ignores it), but a value sealed with another
    // cipher can only fail here, and naming the format tells that apart from a wrong key.
    const format = metadata.cipherFormat;
    const other = format && format !== STORABLE_CIPHER_FORMAT
      ? `; its cipher_format is ${JSON.stringify(format.length > 64 ? `${format.slice(0, 64)}…` : format)}, not ${STORABLE_CIPHER_FORMAT}`
      : '';
    throw new StorableDecryptionError('tag', `Storable failed authentication (wrong key, wrong AAD or tampered)${other}`, { cause });
  }
  let blob: vss.PlaintextBlob;
  const blobReader = strictReader(blobBytes);
  try {
    blob = vss.PlaintextBlob.decode(blobReader);
  } catch (cause) {
    throw new StorableDecryptionError('blob', `decrypted Storable is not a PlaintextBlob: ${decodeFailure(cause, blobReader, blobBytes.length)}`, { cause });
  }
  // protobufjs hands out Node Buffers under Node; callers get a plain Uint8Array (same memory).
  const value = blob.value ?? EMPTY;
  return {
    value: value.constructor === Uint8Array ? value : new Uint8Array(value.buffer, value.byteOffset, value.byteLength),
    version: int64ToBigInt(blob.version),
  };
}

/**
 * What the protobuf decoder refused, for an error message: its own finding (bounded text that
 * quotes no data) and where it stopped.
 */
function decodeFailure(cause: unknown, reader: { pos: number }, length: number): string {
  let finding = (cause instanceof Error ? cause.message : String(cause)).slice(0, 200);
  // protobufjs's word for a length or varint that runs past the end of the bytes (or of the
  // enclosing message): say what that means.
  if (finding.startsWith('index out of range')) finding = `truncated, or a length runs past its end (${finding})`;
  return `${finding} (stopped at byte ${Math.min(reader.pos, length)} of ${length})`;
}
