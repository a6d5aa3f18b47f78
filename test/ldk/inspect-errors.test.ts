/**
 * `ldk-vss inspect` when something is wrong: what a server lists or says is printed escaped (a
 * key that does not deobfuscate is shown as listed, and a server can list escape sequences);
 * exit code 2 for every usage error and 1 for every failure to read the store; an unreachable
 * server said as such; a base URL without its /vss path answered with a hint to add it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { closedLoopbackPort } from '../helpers/ports.js';
import { startVssServer, type StartedVssServer } from '../../src/server/index.js';
import { vssClientFromConfig } from '../../src/client/index.js';
import { bigIntToInt64, PROTOCOL_VERSION, PROTOCOL_VERSION_HEADER, vss } from '../../src/protocol/index.js';
import { runInspect } from '../../src/ldk/inspect.js';
import { escapeControl } from '../../src/ldk/report-format.js';

async function inspect(args: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runInspect(args, { env: {}, stdout: (l) => out.push(l), stderr: (l) => err.push(l) });
  return { code, out, err };
}

const keys = { dataEncryptionKey: randomBytes(32), obfuscationMasterKey: randomBytes(32) };
const keyArgs = ['--data-key', keys.dataEncryptionKey.toString('hex'), '--obfuscation-key', keys.obfuscationMasterKey.toString('hex')];
/** C0 and C1 controls, DEL, a bidi override: what a terminal must never receive from a server. */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/u;

async function listen(handler: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const server: Server = createServer((req, res) => {
    req.resume();
    req.on('end', () => handler(req, res));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('escapeControl', () => {
  it('escapes controls and invisible reordering characters, and leaves other text alone', () => {
    expect(escapeControl('a\u001b[2Jb\u0007\n\u009b\u202e\u200bé€ ok')).toBe('a\\x1b[2Jb\\x07\\x0a\\x9b\\u{202e}\\u{200b}é€ ok');
  });
});

describe('inspect on a store holding a key with escape sequences', () => {
  let server: StartedVssServer;
  const storeId = 'inspect-escapes';
  const hostile = '\u001b]0;owned\u0007\u001b[2J\u202egnp.exe';
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', logLevel: 'silent', auth: { kind: 'noop' } });
    const client = vssClientFromConfig({ baseUrl: server.url, auth: { kind: 'none' } });
    await client.putObjects({ storeId, transactionItems: [{ key: hostile, value: Uint8Array.of(1, 2, 3), version: bigIntToInt64(0n) }] });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('prints the raw key escaped in the table, never the control characters themselves', async () => {
    const { code, out, err } = await inspect(['--server-url', server.url, '--store-id', storeId, ...keyArgs, '--auth', 'none']);
    expect(code).toBe(1); // the key is not one of these keys
    for (const line of [...out, ...err].join('\n').split('\n')) expect(line).not.toMatch(UNSAFE);
    expect(out.join('\n')).toContain('\\x1b]0;owned\\x07\\x1b[2J\\u{202e}gnp.exe');
  });

  it('escapes what a server says in its error messages', async () => {
    const evil = await listen((_req, res) => {
      res.writeHead(400, { [PROTOCOL_VERSION_HEADER]: PROTOCOL_VERSION, 'content-type': 'application/octet-stream' });
      res.end(vss.ErrorResponse.encode({ errorCode: vss.ErrorCode.INVALID_REQUEST_EXCEPTION, message: 'bad\u001b[31m red\u0007' }).finish());
    });
    try {
      const { code, err } = await inspect(['--server-url', `${evil.url}/vss`, '--store-id', storeId, ...keyArgs]);
      expect(code).toBe(1);
      expect(err[0]).not.toMatch(UNSAFE);
      // The client already escapes a server's message (VssServerError); inspect shows it as is.
      expect(err[0]).toContain('bad\\u001b[31m red\\u0007');
    } finally {
      await evil.close();
    }
  });
});

describe('exit codes', () => {
  let server: StartedVssServer;
  beforeAll(async () => {
    server = await startVssServer({ backend: 'memory', logLevel: 'silent', auth: { kind: 'noop' } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('2 for every usage error (with a pointer to --help), like an unknown option', async () => {
    const url = (): string[] => ['--server-url', server.url, '--store-id', 's'];
    const usage: [string[], RegExp][] = [
      [['--bogus'], /Unknown option/],
      [['--store-id', 's', ...keyArgs], /--server-url and --store-id are required/],
      [['--server-url', 'localhost:8080/vss', '--store-id', 's', ...keyArgs], /--server-url must be an http\(s\) URL/],
      [[...url(), '--seed', 'abcd'], /--seed must be 64 bytes of hex/],
      [[...url(), '--data-key', '00'.repeat(32)], /give --seed, or both --data-key and --obfuscation-key/],
      [[...url(), ...keyArgs, '--auth', 'sigs'], /--auth sigs needs --seed/],
      [[...url(), ...keyArgs, '--auth', 'magic'], /--auth must be sigs or none/],
      [[...url(), ...keyArgs, '--format', 'octal'], /--format must be hex or base64/],
      [[...url(), ...keyArgs, '--dump', 'manager'], /--dump takes primary\/secondary\/key/],
      [[...url(), ...keyArgs, '--header', 'Bearer xyz'], /--header takes "Name: value"/],
    ];
    for (const [args, message] of usage) {
      const { code, err } = await inspect(args);
      expect({ args, code }).toEqual({ args, code: 2 });
      expect(err[0]).toMatch(message);
    }
    expect((await inspect([...url(), '--seed', 'abcd'])).err[0]).toMatch(/\(ldk-vss inspect --help lists the options\)$/);
    // A malformed URL that may carry a password is not echoed.
    const withPassword = await inspect(['--server-url', 'alice:hunter2@vss.example/vss', '--store-id', 's', ...keyArgs]);
    expect(withPassword.code).toBe(2);
    expect(withPassword.err.join('\n')).not.toContain('hunter2');
  });

  it('1 when the store cannot be read as asked: a missing value, an unreachable server', async () => {
    const missing = await inspect(['--server-url', server.url, '--store-id', 's', ...keyArgs, '--dump', '//manager']);
    expect(missing.code).toBe(1);
    expect(missing.err[0]).toMatch(/no value at \/\/manager/);
    const port = await closedLoopbackPort();
    const down = await inspect(['--server-url', `http://127.0.0.1:${port}/vss`, '--store-id', 's', ...keyArgs]);
    expect(down.code).toBe(1);
    expect(down.err[0]).toBe(`ldk-vss inspect: the VSS server could not be reached at http://127.0.0.1:${port}/vss (connect ECONNREFUSED 127.0.0.1:${port})`);
    expect(down.err[0]).not.toMatch(/InternalError/);
    expect((await inspect(['--server-url', server.url, '--store-id', 's', ...keyArgs])).code).toBe(0);
  });
});

describe('a base URL without its /vss path', () => {
  it('on a web server answering 404 (a proxy, another app): says there is no VSS API there and suggests /vss', async () => {
    const web = await listen((_req, res) => {
      res.writeHead(404, { 'content-type': 'text/html' });
      res.end('<h1>Not Found</h1>');
    });
    try {
      const { code, err } = await inspect(['--server-url', web.url, '--store-id', 's', ...keyArgs]);
      expect(code).toBe(1);
      expect(err[0]).toMatch(new RegExp(`^ldk-vss inspect: no VSS API at ${web.url}/: the server answered HTTP 404 .*; a VSS base URL usually ends in /vss: try --server-url ${web.url}/vss$`));
      // A URL that has /vss already gets no /vss/vss suggestion.
      const withVss = await inspect(['--server-url', `${web.url}/vss`, '--store-id', 's', ...keyArgs]);
      expect(withVss.err[0]).toMatch(/answered HTTP 404 .*; check the base URL/);
      expect(withVss.err[0]).not.toMatch(/\/vss\/vss/);
    } finally {
      await web.close();
    }
  });

  it('on a VSS server (which answers "Invalid request path." off its /vss path): suggests /vss too', async () => {
    const server = await startVssServer({ backend: 'memory', logLevel: 'silent', auth: { kind: 'noop' } });
    try {
      const root = server.url.replace(/\/vss$/, '');
      const { code, err } = await inspect(['--server-url', root, '--store-id', 's', ...keyArgs]);
      expect(code).toBe(1);
      expect(err[0]).toMatch(/^ldk-vss inspect: no VSS API at .*: the server answered HTTP 400 .*Invalid request path.*; a VSS base URL usually ends in \/vss: try --server-url /);
      expect(err[0]!.endsWith(`try --server-url ${root}/vss`)).toBe(true);
    } finally {
      await server.close();
    }
  });
});
