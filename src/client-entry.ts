/**
 * ldk-vss/client: what a VSS client needs and nothing that needs Node, for browsers, React
 * Native and Node alike: the wire contract, the cryptography and the client, in dependency
 * order. The same modules as the package root re-exports, not copies, so a class or message
 * imported from here is the one `ldk-vss` hands out. `nodeHttpFetch` is included: it reaches
 * `node:http` only when called (see src/client/node-http.ts).
 */
export * from './protocol/index.js';
export * from './crypto/index.js';
export * from './client/index.js';
