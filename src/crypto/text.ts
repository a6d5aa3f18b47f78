/**
 * A string as error messages quote it: as a JSON string literal (control characters escaped),
 * whole when at most `max` characters, else its first `max` characters and its full length.
 * For text another party chose (an obfuscated key, a store key a server listed), which may be
 * megabytes long: quoting it whole would put all of it in every message and log line.
 */
export function quotedPrefix(text: string, max: number): string {
  if (text.length <= max) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, max))}… (${text.length} characters)`;
}
