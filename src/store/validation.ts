/**
 * LDK's KVStore key rules (rust-lightning `check_namespace_key_validity`): every component is
 * at most 120 characters from `a-zA-Z0-9_-`, a key is never empty, and an empty primary
 * namespace forces an empty secondary one. Because `#` is not in the alphabet, joining
 * components with `#` can never be ambiguous.
 */
import { InvalidKeyError } from './errors.js';

export const KVSTORE_NAMESPACE_KEY_ALPHABET = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-';
export const KVSTORE_NAMESPACE_KEY_MAX_LEN = 120;
const VALID_COMPONENT = /^[a-zA-Z0-9_-]*$/;

function checkComponent(what: string, value: string): void {
  if (typeof value !== 'string') throw new InvalidKeyError(`${what} must be a string`);
  if (value.length > KVSTORE_NAMESPACE_KEY_MAX_LEN) {
    throw new InvalidKeyError(`${what} is ${value.length} characters long, at most ${KVSTORE_NAMESPACE_KEY_MAX_LEN} are allowed`);
  }
  if (!VALID_COMPONENT.test(value)) throw new InvalidKeyError(`${what} ${JSON.stringify(value)} has characters outside [a-zA-Z0-9_-]`);
}

/** Validates a (primary, secondary) namespace pair, as for `list`. */
export function checkNamespace(primaryNamespace: string, secondaryNamespace: string): void {
  checkComponent('primary namespace', primaryNamespace);
  checkComponent('secondary namespace', secondaryNamespace);
  if (primaryNamespace === '' && secondaryNamespace !== '') {
    throw new InvalidKeyError('a secondary namespace requires a non-empty primary namespace');
  }
}

/** Validates a full address, as for `read`, `write` and `remove`. */
export function checkKey(primaryNamespace: string, secondaryNamespace: string, key: string): void {
  checkNamespace(primaryNamespace, secondaryNamespace);
  checkComponent('key', key);
  if (key === '') throw new InvalidKeyError('key must not be empty');
}
