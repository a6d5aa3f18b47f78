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
/** The longest delay a Node timer honours; a longer one fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** The largest value PostgreSQL takes for its timeout settings (INT_MAX ms). */
export const MAX_POSTGRES_TIMEOUT_MS = 2_147_483_647;

/** Length in Unicode code points, which is what PostgreSQL's varchar(n) counts. */
function countCodePoints(text: string): number {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is a single code point.
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

/** Whether `text` fits in varchar(max) (counted in code points). */
export function fitsLength(text: string, max: number): boolean {
  return text.length <= max || countCodePoints(text) <= max;
}
