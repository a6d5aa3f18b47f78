/**
 * LDK's KVStore key rules (rust-lightning `check_namespace_key_validity`): every component is
 * at most 120 characters from `a-zA-Z0-9_-`, a key is never empty, and an empty primary
 * namespace forces an empty secondary one. Because `#` is not in the alphabet, joining
 * components with `#` can never be ambiguous.
 */
import { isUint8Array } from '../protocol/bytes.js';
import { InvalidKeyError, InvalidValueError } from './errors.js';

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

/** What a wrong value is, for the error message. */
function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (Array.isArray(value)) return 'an array';
  const kind = typeof value === 'object' ? Object.prototype.toString.call(value).slice(8, -1) : typeof value;
  return `${/^[aeio]/i.test(kind) ? 'an' : 'a'} ${kind === 'Object' ? 'object' : kind}`;
}

/**
 * Validates a value to write. Anything but bytes would otherwise be coerced on copying (a
 * string becomes zeros, numbers wrap at 256) and stored silently, or fail later inside the
 * crypto layer with an error that is not a `StoreError`. A Uint8Array from another realm (a
 * worker, a `vm` context) or a Node Buffer counts: both are Uint8Arrays.
 */
export function checkValue(value: unknown, primaryNamespace: string, secondaryNamespace: string, key: string): asserts value is Uint8Array {
  if (isUint8Array(value)) return;
  // The address is formatted only here: every write passes this check.
  const where = JSON.stringify([primaryNamespace, secondaryNamespace, key]);
  throw new InvalidValueError(`the value for ${where} must be a Uint8Array, got ${describeValue(value)}`);
}

/** Validates a full address, as for `read`, `write` and `remove`. */
export function checkKey(primaryNamespace: string, secondaryNamespace: string, key: string): void {
  checkNamespace(primaryNamespace, secondaryNamespace);
  checkComponent('key', key);
  if (key === '') throw new InvalidKeyError('key must not be empty');
}
