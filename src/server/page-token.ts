/**
 * ListKeyVersions page tokens: the decimal creation sequence number (`sort_order`) of the last
 * key returned, exactly as the reference encodes them, so tokens work across both servers.
 */
import { INT64_MAX } from '../protocol/index.js';
import { boundedDecimal } from './text.js';

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
  // A 64 MB token converted whole held the event loop, and every other request, for 18 s.
  const value = boundedDecimal(token, MAX_DIGITS);
  if (value === undefined || value < 0n || value > INT64_MAX) return undefined;
  return value;
}
