// Public API of src/crypto; the package root re-exports everything here.
export * from './errors.js';
export { KeyObfuscator } from './key-obfuscator.js';
export { encryptStorable, decryptStorable, STORABLE_CIPHER_FORMAT } from './storable.js';
export type { EncryptStorableOptions, DecryptedStorable } from './storable.js';
export {
  deriveVssKeys,
  parseExtendedPrivateKey,
  VSS_HARDENED_CHILD_INDEX,
  VSS_SIGS_AUTH_HARDENED_CHILD_INDEX,
  VSS_LNURL_AUTH_HARDENED_CHILD_INDEX,
} from './derive.js';
export type { VssKeys } from './derive.js';
export { sigsAuthorizationValue, sigsAuthPreimage, SIGS_AUTH_SIGNING_CONSTANT } from './sigs-auth.js';
export {
  parseLnurlChallenge,
  lnurlLinkingPath,
  lnurlLinkingKey,
  signLnurl,
  LNURL_HASHING_DERIVATION_INDEX,
} from './lnurl-auth.js';
export type { LnurlChallenge } from './lnurl-auth.js';
