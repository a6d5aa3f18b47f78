export type { Authorizer } from './types.js';
export { NoopAuthorizer, NOOP_USER_TOKEN } from './noop.js';
export { SignatureAuthorizer, SIGNING_CONSTANT, SIGNATURE_TIME_WINDOW_SECONDS, signatureMessage } from './signature.js';
export type { SignatureAuthorizerOptions } from './signature.js';
export { JwtAuthorizer, JwtKeyError, JWT_EXPIRY_LEEWAY_SECONDS, parseRsaPublicKeyPem } from './jwt.js';
export type { JwtAuthorizerOptions } from './jwt.js';
