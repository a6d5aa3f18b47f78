/**
 * The one test of "is this bytes" that the crypto, client and store layers share for a caller's
 * (or a fetch implementation's) input.
 */

/**
 * The `[Symbol.toStringTag]` getter of %TypedArray%.prototype: it reads the view's internal
 * type name, so it answers for typed arrays of every realm and cannot be fooled by an object
 * (or another typed array) that defines its own `Symbol.toStringTag`; anything that is not a
 * typed array (a DataView, a Proxy, a plain object) gives undefined.
 */
const typedArrayName = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Uint8Array.prototype) as object, Symbol.toStringTag)!.get!;

/**
 * True for a Uint8Array of any JavaScript realm, a Node Buffer included. `instanceof Uint8Array`
 * is false for bytes made in another realm (a `node:vm` context, an iframe, and notably Jest's
 * jsdom environment, where `TextEncoder` and `crypto.getRandomValues` hand out jsdom's own
 * Uint8Arrays), which are bytes all the same: every API they reach here (protobufjs, @noble,
 * `TypedArray.prototype.set`, `TextDecoder`) reads them by their internal slots. A DataView, any
 * other typed array (Int8Array, Uint8ClampedArray), a plain array and a string are not bytes.
 */
export function isUint8Array(value: unknown): value is Uint8Array {
  return value instanceof Uint8Array || typedArrayName.call(value) === 'Uint8Array';
}

/**
 * `bytes` as a Uint8Array of this realm: itself when it already is one (a Node Buffer stays a
 * Buffer), else a view of the same memory (no copy). Bytes handed back to callers are then
 * `instanceof Uint8Array` for them, whatever realm the fetch implementation made them in.
 */
export function ownRealmBytes(bytes: Uint8Array): Uint8Array {
  if (bytes instanceof Uint8Array) return bytes;
  // TypeScript takes every Uint8Array for this realm's, so it narrows `bytes` to never here.
  const view: ArrayBufferView = bytes;
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}
