/**
 * JWT authorizer edge cases where JavaScript's lenient decoding (JSON.parse keeping the last
 * duplicate, numbers without a type, atob's base64 rules, jose's `b64` header) would accept tokens
 * the reference refuses, and key configurations it refuses (spec §4.2).
 */
import { createHmac, createSign, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vss } from '../../src/protocol/index.js';
import { AuthError, JwtAuthorizer, JwtKeyError, startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { configError, errorOf, send } from './helpers.js';

const NOW = 1_750_000_000;
const EXP = NOW + 3600;
const issuer = generateKeyPairSync('rsa', { modulusLength: 2048 });
const publicKeyPem = issuer.publicKey.export({ type: 'spki', format: 'pem' }) as string;
const authorizer = new JwtAuthorizer({ publicKeyPem, now: () => NOW });

const b64 = (text: string) => Buffer.from(text).toString('base64url');
const rs256 = (input: string, key: KeyObject = issuer.privateKey) => createSign('sha256').update(input).sign(key).toString('base64url');
/** A token whose parts are exactly the given text, signed by the issuer: what a (buggy) issuer could emit. */
const signedParts = (headerPart: string, claimsPart: string) => `${headerPart}.${claimsPart}.${rs256(`${headerPart}.${claimsPart}`)}`;
/** A token with the claims JSON exactly as written (duplicates, number spellings and all). */
const token = (claimsJson: string, headerJson = '{"alg":"RS256"}') => signedParts(b64(headerJson), b64(claimsJson));
const bearer = (jwt: string) => ({ authorization: `Bearer ${jwt}` });

async function refusal(jwt: string): Promise<string> {
  const error = await authorizer.authorize(bearer(jwt)).then(
    (user) => new Error(`accepted as user ${JSON.stringify(user)}`),
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AuthError);
  return (error as AuthError).message;
}

/** Base64url letters in order: a letter's index is its 6-bit value. */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** The same text with unused trailing bits of the last letter set: decodes to the same bytes leniently. */
function withTrailingBitsSet(part: string): string {
  const tail = part.length % 4;
  expect(tail === 2 || tail === 3).toBe(true);
  const last = ALPHABET.indexOf(part[part.length - 1]);
  return part.slice(0, -1) + ALPHABET[last | 1];
}

describe('duplicate claims', () => {
  it('refuses a token naming sub twice, whichever user comes last and however the name is escaped', async () => {
    // JSON.parse keeps the last member: the server would act as "bob" while a gateway or issuer
    // parser that keeps the first saw "alice". The reference's typed decoding refuses duplicates.
    for (const claims of [
      `{"sub":"alice","exp":${EXP},"sub":"bob"}`,
      `{"sub":"alice","exp":${EXP},"\\u0073ub":"bob"}`,
      `{"s\\u0075b":"alice","exp":${EXP},"sub":"bob"}`,
      `{"sub":"alice","exp":${EXP},"sub":"alice"}`,
    ]) {
      expect(await refusal(token(claims)), claims).toBe('Claims json decode failed');
    }
  });

  it('refuses a duplicate exp or aud, which would otherwise pick the last expiry or audience', async () => {
    expect(await refusal(token(`{"sub":"u","exp":1,"exp":${EXP}}`))).toBe('Claims json decode failed');
    expect(await refusal(token(`{"sub":"u","exp":${EXP},"aud":"x","aud":null}`))).toBe('Claims json decode failed');
  });

  it('accepts duplicates the reference ignores too: unread claims and members of nested objects', async () => {
    expect(await authorizer.authorize(bearer(token(`{"sub":"u","iat":1,"iat":2,"exp":${EXP}}`)))).toBe('u');
    expect(await authorizer.authorize(bearer(token(`{"ctx":{"sub":"x","sub":"y"},"sub":"u","exp":${EXP},"l":[{"exp":1}]}`)))).toBe('u');
    // Quotes, braces and escapes inside strings do not confuse the member scan.
    const tricky = `{"note":"\\"sub\\":\\"bob\\",}{[","sub":"a\\"b}","exp" : ${EXP} , "x":"\\\\"}`;
    expect(await authorizer.authorize(bearer(token(tricky)))).toBe('a"b}');
  });
});

describe('claims scan', () => {
  it('finds sub and exp in generated claim sets, whatever the other members hold', async () => {
    // A fixed-seed generator: nested values full of quotes, backslashes, braces and commas, so a
    // scan that lost its place would miss `sub`/`exp` or find them inside another value.
    let seed = 0x2545f491;
    const random = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const pieces = ['"', '\\', '{', '}', '[', ']', ',', ':', 'sub', 'exp', ' ', '\n', 'é', '\u{1F600}', '\u0000', 'x'];
    const string = () => Array.from({ length: random(8) }, () => pieces[random(pieces.length)]).join('');
    const value = (depth: number): unknown => {
      switch (random(depth > 3 ? 4 : 6)) {
        case 0:
          return string();
        case 1:
          return random(3) === 0 ? -random(1000) / 7 : random(1e9);
        case 2:
          return [true, false, null][random(3)];
        case 3:
          return string().length;
        case 4:
          return Array.from({ length: random(4) }, () => value(depth + 1));
        default:
          return Object.fromEntries(Array.from({ length: random(4) }, () => [string(), value(depth + 1)]));
      }
    };
    for (let i = 0; i < 150; i++) {
      const entries: Array<[string, unknown]> = Array.from({ length: random(5) }, () => [`k${string()}`, value(0)]);
      const sub = `user-${string()}`;
      entries.splice(random(entries.length + 1), 0, ['sub', sub]);
      entries.splice(random(entries.length + 1), 0, ['exp', EXP]);
      const json = JSON.stringify(Object.fromEntries(entries), null, [0, 1, '\t'][random(3)] as number | string);
      expect(await authorizer.authorize(bearer(token(json))), json).toBe(sub);
    }
  });
});

describe('exp spelling', () => {
  it.each([`${EXP}.0`, `${EXP}.5`, '1e10', '1E10', '5.0', '18446744073709551616', '99999999999999999999999', '-0', '-1', `"${EXP}"`, 'null', 'true', '[1]'])(
    'refuses exp written as %s (the reference decodes exp as an unsigned 64-bit integer)',
    async (exp) => {
      expect(await refusal(token(`{"sub":"u","exp":${exp}}`))).toBe('Claims json decode failed');
    },
  );

  it('accepts integer exp up to u64::MAX, with JSON whitespace around it', async () => {
    expect(await authorizer.authorize(bearer(token('{"sub":"u","exp":18446744073709551615}')))).toBe('u');
    expect(await authorizer.authorize(bearer(token(`{ "sub" : "u" ,\n\t"exp" :\r\n ${EXP} }`)))).toBe('u');
  });

  it('allows exactly 60 s of clock skew past exp', async () => {
    expect(await authorizer.authorize(bearer(token(`{"sub":"u","exp":${NOW - 60}}`)))).toBe('u');
    expect(await refusal(token(`{"sub":"u","exp":${NOW - 61}}`))).toBe('The token is expired');
  });
});

describe('base64url spelling of the three parts', () => {
  const valid = token(`{"sub":"u","exp":${EXP}}`);
  const [headerPart, claimsPart, signaturePart] = valid.split('.');

  it('refuses other spellings of a valid signature: padding, set trailing bits, whitespace, the standard alphabet', async () => {
    expect(await authorizer.authorize(bearer(valid))).toBe('u');
    // A 256-byte signature is 342 letters, so its last letter has 4 unused bits.
    expect(signaturePart.length % 4).toBe(2);
    const standard = Buffer.from(signaturePart, 'base64url').toString('base64').replace(/=+$/, '');
    expect(standard).not.toBe(signaturePart);
    for (const signature of [
      `${signaturePart}==`,
      `${signaturePart}=`,
      withTrailingBitsSet(signaturePart),
      `${signaturePart.slice(0, 10)} ${signaturePart.slice(10)}`,
      `${signaturePart.slice(0, 10)}\t${signaturePart.slice(10)}`,
      standard,
    ]) {
      expect(await refusal(`${headerPart}.${claimsPart}.${signature}`), signature).toBe('Signature base64 decode failed');
    }
  });

  it('refuses an issuer-signed token whose header or claims part is not canonical base64url', async () => {
    // The issuer signed these exact texts, so the signature holds; the reference still refuses them.
    // (Lengths chosen so each part's last letter has unused bits: 22 and 28 bytes.)
    const headerPart = b64('{"alg":"RS256","x":12}');
    const claimsPart = b64(`{"sub":"u","exp":${EXP}}`);
    expect(await authorizer.authorize(bearer(signedParts(headerPart, claimsPart)))).toBe('u');
    const lenientClaims = withTrailingBitsSet(claimsPart);
    expect(Buffer.from(lenientClaims, 'base64url')).toEqual(Buffer.from(claimsPart, 'base64url'));
    expect(await refusal(signedParts(headerPart, lenientClaims))).toBe('Claims base64 decode failed');
    const lenientHeader = withTrailingBitsSet(headerPart);
    expect(Buffer.from(lenientHeader, 'base64url')).toEqual(Buffer.from(headerPart, 'base64url'));
    expect(await refusal(signedParts(lenientHeader, claimsPart))).toBe('Header base64 decode failed');
  });

  it('refuses an unencoded payload ("b64": false), which jose would hand back as the claims', async () => {
    const headerText = b64('{"alg":"RS256","b64":false,"crit":["b64"]}');
    const raw = `{"sub":"raw","exp":${EXP}}`;
    expect(await refusal(signedParts(headerText, raw))).toBe('Claims base64 decode failed');
  });

  it('refuses claims with a byte order mark or invalid UTF-8', async () => {
    expect(await refusal(signedParts(b64('{"alg":"RS256"}'), b64(`\uFEFF{"sub":"u","exp":${EXP}}`)))).toBe('Claims json decode failed');
    const invalidUtf8 = Buffer.concat([Buffer.from('{"sub":"'), Buffer.from([0xc3, 0x28]), Buffer.from(`","exp":${EXP}}`)]);
    expect(await refusal(signedParts(b64('{"alg":"RS256"}'), invalidUtf8.toString('base64url')))).toBe('Claims json decode failed');
  });

  it('refuses a signature plus the modulus (the same value mod n, other bytes)', async () => {
    // Each RS256 signature s < n also has the spelling s + n when that still fits the key size.
    // Find a key and a token where it does, so the check runs every time.
    for (let keys = 0; keys < 40; keys++) {
      const pair = keys === 0 ? issuer : generateKeyPairSync('rsa', { modulusLength: 2048 });
      const n = BigInt(`0x${Buffer.from(pair.publicKey.export({ format: 'jwk' }).n as string, 'base64url').toString('hex')}`);
      if (2n ** 2048n - n < 2n ** 2045n) continue;
      const own = new JwtAuthorizer({ publicKeyPem: pair.publicKey.export({ type: 'spki', format: 'pem' }) as string, now: () => NOW });
      for (let i = 0; i < 300; i++) {
        const input = `${b64('{"alg":"RS256"}')}.${b64(`{"sub":"u${i}","exp":${EXP}}`)}`;
        const s = BigInt(`0x${Buffer.from(rs256(input, pair.privateKey), 'base64url').toString('hex')}`);
        if (s + n >= 2n ** 2048n) continue;
        expect(await own.authorize(bearer(`${input}.${rs256(input, pair.privateKey)}`))).toBe(`u${i}`);
        const other = Buffer.from((s + n).toString(16).padStart(512, '0'), 'hex').toString('base64url');
        await expect(own.authorize(bearer(`${input}.${other}`))).rejects.toThrow('RSA verification failed');
        return;
      }
    }
    throw new Error('no key and token found where signature + modulus fits 2048 bits');
  });
});

describe('algorithm and header', () => {
  it('refuses HS256 signed with the public key PEM as the secret, and alg none', async () => {
    const input = `${b64('{"alg":"HS256","typ":"JWT"}')}.${b64(`{"sub":"u","exp":${EXP}}`)}`;
    for (const secret of [publicKeyPem, issuer.publicKey.export({ type: 'pkcs1', format: 'der' })]) {
      const hs256 = `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
      expect(await refusal(hs256)).toBe('RSA verification failed');
    }
    const none = `${b64('{"alg":"none"}')}.${b64(`{"sub":"u","exp":${EXP}}`)}.`;
    expect(await refusal(none)).toBe('RSA verification failed');
    // An RS256 signature under a header claiming another algorithm is refused as well.
    expect(await refusal(token(`{"sub":"u","exp":${EXP}}`, '{"alg":"RS512"}'))).toBe('RSA verification failed');
  });

  it.each<[string, string, string]>([
    ['no scheme', 'x.y.z', 'Invalid token format.'],
    ['lowercase scheme', 'bearer x.y.z', 'Invalid token format.'],
    ['scheme only', 'Bearer', 'Invalid token format.'],
    ['a tab after the scheme', 'Bearer\tx.y.z', 'Invalid token format.'],
    ['an empty token', 'Bearer ', 'Token does not have three parts'],
    ['four parts', 'Bearer a.b.c.d', 'Token does not have three parts'],
    ['only dots', `Bearer ${'.'.repeat(100_000)}`, 'Token does not have three parts'],
    ['two spaces', 'Bearer  eyJ.eyJ.sig', 'Header base64 decode failed'],
  ])('refuses an Authorization header with %s', async (_name, header, message) => {
    const error = await authorizer.authorize({ authorization: header }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthError);
    expect((error as AuthError).message).toBe(message);
  });
});

describe('key configuration', () => {
  it.each([
    ['PKCS#8', () => issuer.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string],
    ['PKCS#1', () => issuer.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string],
  ])('refuses a %s private key PEM at startup, naming it, instead of deriving its public key', (_name, pem) => {
    expect(() => new JwtAuthorizer({ publicKeyPem: pem() })).toThrow(JwtKeyError);
    expect(() => new JwtAuthorizer({ publicKeyPem: pem() })).toThrow(/is a private key/);
    const error = configError({ VSS_JWT_RSA_PEM: pem() });
    expect(error.variable).toBe('VSS_JWT_RSA_PEM');
    expect(error.message).toMatch(/private key.*public key/);
  });
});

describe('over HTTP', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ auth: { kind: 'jwt', publicKeyPem } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('answers each lenient spelling with 401 AUTH_EXCEPTION, and the canonical token with 200', async () => {
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const body = vss.GetObjectRequest.encode({ storeId: 's', key: 'k' }).finish();
    const valid = token(`{"sub":"alice","exp":${exp}}`);
    const [h, c, s] = valid.split('.');
    const put = vss.PutObjectRequest.encode({ storeId: 's', transactionItems: [{ key: 'k', value: new Uint8Array([1]) }] }).finish();
    expect((await send(`${server.url}/putObjects`, put, { headers: bearer(valid) })).status).toBe(200);
    for (const jwt of [token(`{"sub":"alice","exp":${exp},"sub":"bob"}`), token(`{"sub":"alice","exp":${exp}.0}`), `${h}.${c}.${s}==`, `${h}.${c}.${withTrailingBitsSet(s)}`]) {
      const response = await send(`${server.url}/getObject`, body, { headers: bearer(jwt) });
      expect(response.status, jwt).toBe(401);
      expect(errorOf(response).code).toBe(vss.ErrorCode.AUTH_EXCEPTION);
    }
  });
});
