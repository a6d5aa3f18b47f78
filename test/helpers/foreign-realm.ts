/**
 * Values made in another JavaScript realm (a `node:vm` context), as a jsdom test environment, an
 * iframe or a vm sandbox hands them over: `instanceof` this realm's constructors is false for them.
 */
import { createContext, runInContext } from 'node:vm';

const realm = createContext();
const copyIn = runInContext('(kind, src) => globalThis[kind].from(src)', realm) as (kind: string, src: ArrayLike<number>) => unknown;

/** A Uint8Array of the other realm holding a copy of `bytes`. */
export function foreignBytes(bytes: ArrayLike<number>): Uint8Array {
  const made = copyIn('Uint8Array', bytes) as Uint8Array;
  // Guards the helper itself: the tests mean nothing if these bytes were this realm's.
  if (made instanceof Uint8Array) throw new Error('expected bytes of another realm');
  return made;
}

/** Any value built by `expression` in the other realm (a foreign Int8Array, DataView, array...). */
export function foreignValue<T = unknown>(expression: string): T {
  return runInContext(expression, realm) as T;
}
