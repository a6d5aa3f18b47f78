/**
 * Limits of the VSS protocol and the reference schema. The reference enforces the column
 * lengths only through PostgreSQL errors (500); this server checks them up front (400).
 */
export const MAX_KEY_LENGTH = 600;
export const MAX_STORE_ID_LENGTH = 120;
export const MAX_USER_TOKEN_LENGTH = 120;
export const MAX_PUT_ITEM_COUNT = 1000;
export const LIST_MAX_PAGE_SIZE = 100;
/** Hard ceiling for the request body limit (the reference's MAXIMUM_REQUEST_BODY_SIZE). */
export const MAX_REQUEST_BODY_SIZE_LIMIT = 1024 * 1024 * 1024;
/** Default request body limit. */
export const DEFAULT_MAX_REQUEST_BODY_SIZE = 128 * 1024 * 1024;
/**
 * Default PostgreSQL `lock_timeout` of request statements, in ms. The server's own transactions
 * hold row locks for milliseconds, so a statement still waiting after this long waits on a
 * stuck session (an operator's open transaction, a client whose connection died mid-transaction,
 * which PostgreSQL notices only when TCP keepalive gives up, by default hours later). Failing it
 * (a 500 the client retries) frees its pooled connection; waiting would let such requests take
 * the whole pool, and with it every other user's requests.
 */
export const DEFAULT_LOCK_TIMEOUT_MS = 30_000;
/**
 * Default time to get a PostgreSQL connection, in ms: opening a new one, or waiting for a pooled
 * one when all are busy. Without a limit, a database that accepts TCP but never answers (a
 * half-dead host, a hung proxy) stalls startup and every request for good; past it the request
 * fails with a 500 the client retries.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/**
 * How long a request body may go without a single byte arriving before the request is answered
 * with a retryable 408 and its connection closed, in ms. A limit on silence, not on the whole
 * upload: a slow link still uploads a 1 GiB value, while a client that stopped sending frees its
 * connection and buffered body. (Same as Node's default headersTimeout.)
 */
export const BODY_STALL_TIMEOUT_MS = 60_000;
/** The longest delay a Node timer honours; a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The largest value PostgreSQL takes for its timeout settings (INT_MAX ms). */
export const MAX_POSTGRES_TIMEOUT_MS = 2_147_483_647;

/**
 * Whether `text` has at most `max` Unicode code points, which is what PostgreSQL's varchar(n)
 * counts. Stops at the first code point past `max`: keys and store ids come straight from the
 * body, and counting all of a body-sized one held the event loop for over a second.
 */
function hasAtMostCodePoints(text: string, max: number): boolean {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    if (++count > max) return false;
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is a single code point.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
  }
  return true;
}

/** Whether `text` fits in varchar(max) (counted in code points). */
export function fitsLength(text: string, max: number): boolean {
  // A code point is one or two UTF-16 units: past 2 * max units the text cannot fit.
  if (text.length <= max) return true;
  if (text.length > 2 * max) return false;
  return hasAtMostCodePoints(text, max);
}
