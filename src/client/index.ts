// Public API of src/client; the package root re-exports everything here.
export * from './errors.js';
export * from './retry.js';
export { FixedHeaders, HeaderProviderError, withHeader } from './headers.js';
export type { VssHeaderProvider, HeaderProviderFailure } from './headers.js';
export { SigsAuthProvider } from './sigs-auth-provider.js';
export type { SigsAuthProviderOptions } from './sigs-auth-provider.js';
export { LnurlAuthJwtProvider, parseJwtExpiry, JWT_EXPIRY_MARGIN_MS } from './lnurl-auth-provider.js';
export type { LnurlAuthJwtProviderOptions } from './lnurl-auth-provider.js';
export type { FetchFunction, FetchResponse } from './http.js';
// Node-only transport; no static node: import, so browser bundles that include it still build.
export { nodeHttpFetch, nodeHttpAvailable } from './node-http.js';
export type { NodeHttpFetchOptions } from './node-http.js';
export { VssClient, DEFAULT_TIMEOUT_MS, MAX_RESPONSE_BYTES } from './client.js';
export type { VssClientOptions, VssCallOptions } from './client.js';
export { headerProviderFromConfig, vssClientFromConfig } from './config.js';
export type { VssAuthConfig, VssClientConfig, VssClientRuntime } from './config.js';
