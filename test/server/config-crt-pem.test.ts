/**
 * VSS_PSQL_CRT_PEM is checked when the configuration is read: Node's TLS skips whatever it cannot
 * parse, so a DER file, a key or a damaged certificate would otherwise only show up as a server
 * certificate that cannot be verified, on every connection, without naming the variable.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadServeConfig } from '../../src/server/config.js';
import { configError } from './helpers.js';
import { EXPIRED_2001, VALID_2000_TO_2099 } from './test-certificates.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ldk-vss-crt-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const DATABASE_URL = 'postgres://vss@db.internal:5432/vss';

async function file(name: string, content: string | Uint8Array): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content);
  return path;
}

describe('VSS_PSQL_CRT_PEM', () => {
  it.each<[string, () => Promise<string>, RegExp]>([
    ['a DER certificate file', () => file('root.crt', new X509Certificate(VALID_2000_TO_2099).raw), /holds no PEM certificate.*openssl x509 -inform der/],
    ['a public key PEM', async () => file('key.pem', generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }) as string), /holds a PEM PUBLIC KEY, not the root certificate/],
    ['a damaged certificate', () => file('damaged.pem', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'), /certificate 1 of 1 is not a valid X\.509 certificate/],
    ['a bundle whose second certificate is damaged', () => file('bundle.pem', `${VALID_2000_TO_2099}\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n`), /certificate 2 of 2 is not a valid/],
  ])('refuses %s with one line naming the variable', async (_name, make, message) => {
    const error = configError({ DATABASE_URL, VSS_PSQL_CRT_PEM: await make() });
    expect(error.variable).toBe('VSS_PSQL_CRT_PEM');
    expect(error.message).toMatch(message);
    expect(error.message).not.toContain('\n');
  });

  it('takes a bundle of several certificates, indented as config files tend to, and passes every one on', async () => {
    const indented = `${VALID_2000_TO_2099}\n${EXPIRED_2001}`.replace(/^/gm, '    ');
    const { options } = loadServeConfig({ DATABASE_URL, VSS_PSQL_CRT_PEM: await file('bundle-ok.pem', indented) });
    const ca = (options.backend as { ssl?: { ca: string } }).ssl?.ca ?? '';
    expect(ca).toBe(`${VALID_2000_TO_2099.trim()}\n${EXPIRED_2001.trim()}`);
  });
});
