/**
 * ListKeyVersions page tokens: the decimal creation sequence number (`sort_order`) of the last
 * key returned, exactly as the reference encodes them, so tokens work across both servers.
 */
import { INT64_MAX } from '../protocol/index.js';

const SIGNED_DECIMAL = /^[+-]?[0-9]+$/;
/** Significant digits of INT64_MAX: any longer number overflows. */
const MAX_DIGITS = INT64_MAX.toString(10).length;

export function encodePageToken(sortOrder: bigint): string {
  return sortOrder.toString(10);
}

/**
 * Parses a token like the reference (Rust `i64::from_str`, then "not negative"): optional sign,
 * digits only, within int64. Returns undefined for anything else.
 */
export function decodePageToken(token: string): bigint | undefined {
  if (!SIGNED_DECIMAL.test(token)) return undefined;
  // Overflow is decided by the count of significant digits before converting (the reference
  // accepts any number of leading zeros): BigInt of a body-sized string of digits is quadratic,
  // and a 64 MB token held the event loop, and with it every other request, for 18 s.
  const signed = token[0] === '+' || token[0] === '-' ? 1 : 0;
  let first = signed;
  while (first < token.length - 1 && token[first] === '0') first++;
  if (token.length - first > MAX_DIGITS) return undefined;
  const value = BigInt(token.slice(0, signed) + token.slice(first));
  if (value < 0n || value > INT64_MAX) return undefined;
  return value;
}
