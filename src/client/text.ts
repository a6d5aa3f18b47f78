/**
 * Server-supplied text (a VSS `ErrorResponse.message`, an LNURL `reason`) as an error message
 * quotes it: at most `max` characters, with its full length when cut, on one line, with control
 * characters (C0, DEL and C1, whose CSI starts terminal escapes), line separators and
 * bidirectional overrides written as \u escapes. A hostile or broken server could otherwise write
 * terminal escapes, forged log lines or megabytes into the wallet's logs.
 */
export function shownServerText(text: string, max: number): string {
  const clipped = text.length > max ? `${text.slice(0, max).replace(/[\uD800-\uDBFF]$/, '')}… (${text.length} characters)` : text;
  return clipped.replace(/[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
