/**
 * startVssServer on an address it cannot listen on: the error says it is the address (so the CLI
 * does not report it as a storage failure) and keeps the system error's code for callers.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { startVssServer } from '../../src/server/index.js';
import { ServerListenError } from '../../src/server/server.js';

describe('startVssServer on an address in use', () => {
  it('rejects with a ServerListenError naming the address, and keeps its code (EADDRINUSE)', async () => {
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const error = await startVssServer({ auth: { kind: 'noop' }, port }).then(
        () => undefined,
        (failure: unknown) => failure,
      );
      expect(error).toBeInstanceOf(ServerListenError);
      const listenError = error as ServerListenError;
      expect(listenError.address).toBe(`127.0.0.1:${port}`);
      expect(listenError.code).toBe('EADDRINUSE');
      expect(listenError.message).toMatch(new RegExp(`^cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});
