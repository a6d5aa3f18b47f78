/**
 * TcpPeerListener (harness/tcp-peers.ts): the links it keeps are the open ones, so a node that
 * peers reconnect to many times does not pile up dead links.
 */
import { once } from 'node:events';
import { connect } from 'node:net';
import * as ldk from 'lightningdevkit';
import { beforeAll, describe, expect, it } from 'vitest';
import { TcpPeerListener } from '../../harness/tcp-peers.js';
import { initLdk } from '../../src/ldk/index.js';

beforeAll(async () => {
  await initLdk();
});

/** The part of a PeerManager an accepted link uses before any bytes arrive. */
const acceptingPeerManager = {
  new_inbound_connection: () => ldk.Result_NoneNoneZ.constructor_ok(),
  socket_disconnected: () => {},
} as unknown as ldk.PeerManager;

describe('TcpPeerListener', () => {
  it('forgets a link once its socket has closed, and closes the open ones on close()', async () => {
    const listener = new TcpPeerListener(() => acceptingPeerManager);
    const port = await listener.listen();
    try {
      const first = connect(port, '127.0.0.1');
      await once(first, 'connect');
      await expect.poll(() => listener.links.size).toBe(1);
      first.destroy();
      await expect.poll(() => listener.links.size).toBe(0);

      const second = connect(port, '127.0.0.1');
      await once(second, 'connect');
      await expect.poll(() => listener.links.size).toBe(1);
      const ended = once(second, 'close');
      await listener.close();
      await ended; // close() ended the open link
      expect(listener.links.size).toBe(0);
    } finally {
      await listener.close().catch(() => {});
    }
  });
});
