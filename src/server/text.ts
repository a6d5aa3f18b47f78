/**
 * Reading strings that come straight from a request (internal; not part of ldk-vss/server).
 */

/**
 * A copy of `text` that shares no memory with it. V8 keeps the whole parent of a sliced string
 * alive: a short token cut from a kilobytes-long header and stored would hold the header.
 */
export function detached(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8');
}

/**
 * The value of `text`, already checked to be a decimal integer (an optional sign, then digits;
 * any number of leading zeros, as the reference accepts), or undefined when it has more than
 * `maxDigits` significant digits. Counted before converting: BigInt of a body-sized run of digits
 * is quadratic, and held the event loop for seconds.
 */
export function boundedDecimal(text: string, maxDigits: number): bigint | undefined {
  const signed = text[0] === '+' || text[0] === '-' ? 1 : 0;
  let first = signed;
  while (first < text.length - 1 && text.charCodeAt(first) === 0x30) first++;
  if (text.length - first > maxDigits) return undefined;
  return BigInt(text.slice(0, signed) + text.slice(first));
}
