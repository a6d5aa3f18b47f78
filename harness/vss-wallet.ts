/**
 * Connects harness wallets to a real VSS server: every wallet's store is a `VssStore`
 * opened from the wallet's 64-byte seed and its store id alone, as a wallet app would on a
 * new device. The seed gives everything, like in LDK Node: the LDK node keys (the BIP32
 * master private key) and the VSS keys (data encryption, key obfuscation, signature auth).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { deriveVssKeys } from '../src/crypto/index.js';
import type { RetrySettings, VssClientConfig } from '../src/client/index.js';
import { VssStore, type WriteMode } from '../src/store/index.js';
import type { WalletIdentity, WalletStoreHandle, WalletStoreOpener } from './wallets.js';

/**
 * Client retries are kept short: the persister above retries forever with its own backoff,
 * and long client-side retries would only hide outages from it (and from a crash).
 */
export const HARNESS_CLIENT_RETRY: RetrySettings = { baseDelayMs: 10, maxAttempts: 3, maxTotalDelayMs: 1_000, maxJitterMs: 10 };

export interface VssWalletOptions {
  /** Server base URL including `/vss`, e.g. `http://127.0.0.1:8080/vss`. */
  serverUrl: string;
  /** `sigs` (default): LDK Node's signature auth with the seed's key; `none` for a noop server. */
  auth?: 'sigs' | 'none';
  writeMode?: WriteMode;
  /**
   * A directory for each wallet's device-local version ledger (`<dir>/<storeId>.versions`):
   * a restore on the same device then detects a server that went back in time. Without it
   * every open is a "new device".
   */
  versionLedgerDir?: string;
  /** Per-request timeout. Default 5 s. */
  timeoutMs?: number;
  retry?: RetrySettings | 'none';
}

export function vssClientConfigFor(seed: Uint8Array, options: VssWalletOptions): VssClientConfig {
  const auth = options.auth ?? 'sigs';
  return {
    baseUrl: options.serverUrl,
    timeoutMs: options.timeoutMs ?? 5_000,
    retry: options.retry ?? HARNESS_CLIENT_RETRY,
    auth: auth === 'sigs' ? { kind: 'sigs', secretKey: deriveVssKeys(seed).sigsAuthSecretKey } : { kind: 'none' },
  };
}

/** The ledger file a wallet uses on "this device", if ledgers are kept. */
export function versionLedgerPath(options: VssWalletOptions, storeId: string): string | undefined {
  if (!options.versionLedgerDir) return undefined;
  mkdirSync(options.versionLedgerDir, { recursive: true });
  return join(options.versionLedgerDir, `${storeId}.versions`);
}

/** True if a ledger file holds at least one recorded version (more than its header line). */
function hasVersionRecords(path: string): boolean {
  if (!existsSync(path)) return false;
  return readFileSync(path, 'utf8').split('\n').filter((line) => line.trim() !== '').length > 1;
}

/** Opens a wallet's VssStore from its seed and store id. */
export async function openVssWalletStore(identity: Pick<WalletIdentity, 'seed' | 'storeId'>, options: VssWalletOptions): Promise<VssStore> {
  return VssStore.open({
    storeId: identity.storeId,
    client: vssClientConfigFor(identity.seed, options),
    keys: { seed: identity.seed },
    writeMode: options.writeMode,
    versionLedger: versionLedgerPath(options, identity.storeId),
  });
}

/** A `WalletStoreOpener` for `WalletFleet`: each call opens a new VssStore client. */
export function vssStoreOpener(options: VssWalletOptions): WalletStoreOpener {
  return async (identity): Promise<WalletStoreHandle> => {
    const ledger = versionLedgerPath(options, identity.storeId);
    const hadLocalRecord = ledger === undefined ? false : hasVersionRecords(ledger);
    const store = await openVssWalletStore(identity, options);
    return {
      store,
      hadLocalRecord,
      syncStore: () => store.toSyncStore(),
      close: () => store.close(),
    };
  };
}
