/**
 * An X.509 certificate given as the JWT key (VSS_JWT_RSA_PEM) is used only within its validity
 * period: the server refuses to start outside it, and a running server stops accepting tokens
 * once the certificate has expired.
 */
import { SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { JwtAuthorizer, JwtKeyError, parseRsaPublicKeyPem, startVssServer } from '../../src/server/index.js';
import { configError } from './helpers.js';
import { EXPIRED_2001, TEST_SIGNING_KEY, VALID_2000_TO_2099 } from './test-certificates.js';

const seconds = (iso: string) => Date.parse(iso) / 1000;

async function token(sub: string): Promise<string> {
  return new SignJWT({ sub, exp: Math.floor(Date.now() / 1000) + 600 }).setProtectedHeader({ alg: 'RS256' }).sign(TEST_SIGNING_KEY);
}

describe('X.509 certificate as the JWT key', () => {
  it('verifies tokens with the key of a certificate that is valid now, and says when it expires', async () => {
    const authorizer = new JwtAuthorizer({ publicKeyPem: VALID_2000_TO_2099 });
    expect(await authorizer.authorize({ authorization: `Bearer ${await token('cert-user')}` })).toBe('cert-user');
    expect(authorizer.certificateExpiresAt?.toISOString()).toBe('2099-12-31T23:59:59.000Z');
  });

  it('refuses an expired certificate at startup with one line naming VSS_JWT_RSA_PEM', () => {
    const error = configError({ VSS_JWT_RSA_PEM: EXPIRED_2001 });
    expect(error.variable).toBe('VSS_JWT_RSA_PEM');
    expect(error.message).toMatch(/^VSS_JWT_RSA_PEM: the X\.509 certificate has expired \(valid from 2000-01-01T00:00:00\.000Z to 2001-01-01T00:00:00\.000Z\)/);
    expect(error.message).not.toContain('\n');
    expect(() => parseRsaPublicKeyPem(EXPIRED_2001)).toThrow(JwtKeyError);
  });

  it('refuses an expired certificate in startVssServer and in the JwtAuthorizer constructor', async () => {
    await expect(startVssServer({ auth: { kind: 'jwt', publicKeyPem: EXPIRED_2001 } })).rejects.toThrow(/certificate has expired/);
    expect(() => new JwtAuthorizer({ publicKeyPem: EXPIRED_2001 })).toThrow(JwtKeyError);
  });

  it('refuses a certificate that is not valid yet', () => {
    const before = () => seconds('1999-12-31T23:59:59Z');
    expect(() => new JwtAuthorizer({ publicKeyPem: VALID_2000_TO_2099, now: before })).toThrow(/certificate is not valid yet/);
    expect(() => parseRsaPublicKeyPem(VALID_2000_TO_2099, before)).toThrow(/certificate is not valid yet/);
    // Both ends of the period are included.
    expect(() => parseRsaPublicKeyPem(VALID_2000_TO_2099, () => seconds('2000-01-01T00:00:00Z'))).not.toThrow();
    expect(() => parseRsaPublicKeyPem(VALID_2000_TO_2099, () => seconds('2099-12-31T23:59:59Z'))).not.toThrow();
  });

  it('a running server refuses tokens once its certificate has expired', async () => {
    let now = seconds('2099-12-31T23:59:00Z');
    const authorizer = new JwtAuthorizer({ publicKeyPem: VALID_2000_TO_2099, now: () => now });
    // The token's own exp is checked against the same clock: give it one that outlives the certificate.
    const longLived = await new SignJWT({ sub: 'cert-user', exp: seconds('2100-06-01T00:00:00Z') }).setProtectedHeader({ alg: 'RS256' }).sign(TEST_SIGNING_KEY);
    expect(await authorizer.authorize({ authorization: `Bearer ${longLived}` })).toBe('cert-user');
    now = seconds('2100-01-01T00:00:00Z');
    await expect(authorizer.authorize({ authorization: `Bearer ${longLived}` })).rejects.toThrow(/certificate is not valid at this time/);
  });

  it('names a PEM labelled CERTIFICATE that does not parse as a certificate', () => {
    const broken = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----';
    expect(() => parseRsaPublicKeyPem(broken)).toThrow(/not a valid X\.509 certificate PEM/);
    expect(configError({ VSS_JWT_RSA_PEM: broken }).variable).toBe('VSS_JWT_RSA_PEM');
  });
});
