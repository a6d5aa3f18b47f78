/**
 * Plain-data descriptions of a client and its credentials. They survive `structuredClone`
 * and `postMessage`, so a worker thread (or another process) can rebuild an equivalent
 * client from them: this is how the store's synchronous bridge runs VSS I/O off-thread.
 */
import { FixedHeaders, type VssHeaderProvider } from './headers.js';
import type { FetchFunction } from './http.js';
import { LnurlAuthJwtProvider } from './lnurl-auth-provider.js';
import { NO_RETRY, retryPolicyFromSettings, DEFAULT_RETRY_SETTINGS, type RetrySettings, type Sleep } from './retry.js';
import { SigsAuthProvider } from './sigs-auth-provider.js';
import { VssClient, type VssClientOptions } from './client.js';

/** How requests authenticate. */
export type VssAuthConfig =
  | { kind: 'none' }
  | { kind: 'fixed'; headers: Record<string, string> }
  | { kind: 'sigs'; secretKey: Uint8Array; headers?: Record<string, string> }
  /** `parentKey`: extended private key string (`xprv…`/`tprv…`), e.g. `lnurlAuthParentKey.privateExtendedKey`. */
  | { kind: 'lnurl'; parentKey: string; url: string; headers?: Record<string, string>; timeoutMs?: number };

/** The serializable subset of the client's options. */
export interface VssClientConfig {
  baseUrl: string;
  /** Per-attempt timeout (default 10 s). */
  timeoutMs?: number;
  /** Retry schedule; `'none'` disables retries; default `DEFAULT_RETRY_SETTINGS`. */
  retry?: RetrySettings | 'none';
  allowMissingProtocolVersion?: boolean;
  /** Default `{ kind: 'none' }`. */
  auth?: VssAuthConfig;
}

/** Non-serializable pieces a caller may add when materializing a config. */
export interface VssClientRuntime {
  fetch?: FetchFunction;
  sleep?: Sleep;
  now?: () => number;
  onRetry?: VssClientOptions['onRetry'];
}

/** Builds the header provider an auth config describes. */
export function headerProviderFromConfig(auth: VssAuthConfig, runtime: VssClientRuntime = {}): VssHeaderProvider {
  switch (auth.kind) {
    case 'none':
      return new FixedHeaders();
    case 'fixed':
      return new FixedHeaders(auth.headers);
    case 'sigs':
      return new SigsAuthProvider(auth.secretKey, auth.headers, { now: runtime.now });
    case 'lnurl':
      return new LnurlAuthJwtProvider(auth.parentKey, auth.url, auth.headers, {
        fetch: runtime.fetch,
        timeoutMs: auth.timeoutMs,
        now: runtime.now,
      });
    default: {
      const unknown: never = auth;
      throw new TypeError(`unknown VSS auth kind ${JSON.stringify((unknown as { kind?: unknown }).kind)}`);
    }
  }
}

/** Builds a `VssClient` from a plain config (plus optional runtime hooks). */
export function vssClientFromConfig(config: VssClientConfig, runtime: VssClientRuntime = {}): VssClient {
  const retry = config.retry ?? DEFAULT_RETRY_SETTINGS;
  return new VssClient(config.baseUrl, {
    timeoutMs: config.timeoutMs,
    retryPolicy: retry === 'none' ? NO_RETRY : retryPolicyFromSettings(retry),
    allowMissingProtocolVersion: config.allowMissingProtocolVersion,
    headerProvider: headerProviderFromConfig(config.auth ?? { kind: 'none' }, runtime),
    fetch: runtime.fetch,
    sleep: runtime.sleep,
    onRetry: runtime.onRetry,
  });
}
