/**
 * Loading the LDK WASM module. The bindings keep one global WASM instance per JavaScript
 * realm, so loading twice would replace live state under existing objects: `initLdk` loads
 * it once per process and every later call returns the same promise.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import * as ldk from 'lightningdevkit';

let loading: Promise<void> | undefined;

/** Path of the `liblightningjs.wasm` shipped with the installed `lightningdevkit` package. */
export function ldkWasmPath(): string {
  return createRequire(import.meta.url).resolve('lightningdevkit/liblightningjs.wasm');
}

/**
 * Loads the LDK WASM binary (idempotent). Must be awaited before any `lightningdevkit`
 * object is created. A failed load is not cached, so a later call can retry.
 */
export function initLdk(): Promise<void> {
  loading ??= readFile(ldkWasmPath())
    .then((binary) => ldk.initializeWasmFromBinary(binary))
    .catch((err: unknown) => {
      loading = undefined;
      throw err;
    });
  return loading;
}
