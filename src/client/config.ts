/**
 * Plain-data descriptions of a client and its credentials. They survive `structuredClone`
 * and `postMessage`, so a worker thread (or another process) can rebuild an equivalent
 * client from them: this is how the store's synchronous bridge runs VSS I/O off-thread.
 */
import { FixedHeaders, type VssHeaderProvider } from './headers.js';
import type { FetchFunction } from './http.js';
import { nodeHttpAvailable, nodeHttpFetch } from './node-http.js';
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
  /**
   * Certificate authorities (PEM) trusted for an `https` base URL instead of Node's roots: a VSS
   * server behind a private CA. Node only; requests then go through `nodeHttpFetch({ ca })`, also
   * from the store's blocking view, whose worker cannot be handed a fetch function. A `fetch`
   * given in the runtime must trust the CA itself (both at once are refused). The LNURL-auth
   * login keeps the runtime's fetch and the public roots.
   */
  tlsCa?: string | readonly string[];
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

/** The fetch for VSS requests: the runtime's, or the Node transport trusting `tlsCa`. */
function transportFor(config: VssClientConfig, runtime: VssClientRuntime): FetchFunction | undefined {
  const ca = config.tlsCa;
  if (ca === undefined) return runtime.fetch;
  if (typeof ca !== 'string' && !(Array.isArray(ca) && ca.every((pem) => typeof pem === 'string'))) {
    throw new TypeError('tlsCa must be a PEM string or an array of PEM strings');
  }
  if (runtime.fetch) throw new TypeError('tlsCa applies to the built-in Node transport; a fetch given in the runtime must trust the CA itself (give one or the other)');
  if (!nodeHttpAvailable()) throw new TypeError('tlsCa needs Node.js (node:https, Node >= 20.16); elsewhere give a fetch that trusts the CA');
  return nodeHttpFetch({ ca });
}

/** Builds a `VssClient` from a plain config (plus optional runtime hooks). */
export function vssClientFromConfig(config: VssClientConfig, runtime: VssClientRuntime = {}): VssClient {
  const retry = config.retry ?? DEFAULT_RETRY_SETTINGS;
  // A config may come from JSON or an environment variable: 'None' or 'off' would otherwise be
  // read as settings and refused for a missing baseDelayMs, which does not say what to write.
  if (retry !== 'none' && typeof retry !== 'object') {
    throw new TypeError(
      `retry must be 'none' or settings { baseDelayMs, maxAttempts, maxTotalDelayMs, maxJitterMs }, got ${typeof retry === 'string' ? JSON.stringify(retry) : String(retry)}`,
    );
  }
  return new VssClient(config.baseUrl, {
    timeoutMs: config.timeoutMs,
    retryPolicy: retry === 'none' ? NO_RETRY : retryPolicyFromSettings(retry),
    allowMissingProtocolVersion: config.allowMissingProtocolVersion,
    headerProvider: headerProviderFromConfig(config.auth ?? { kind: 'none' }, runtime),
    fetch: transportFor(config, runtime),
    sleep: runtime.sleep,
    onRetry: runtime.onRetry,
  });
}
