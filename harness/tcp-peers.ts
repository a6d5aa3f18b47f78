/**
 * LDK peer connections over real TCP sockets, for nodes in different processes (the
 * child-process wallet and the harness's network). Like the in-memory sockets, LDK's
 * `send_data` only hands bytes to the socket; reads call `read_event` from the socket's own
 * event-loop turn, never from inside an LDK call.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import * as ldk from 'lightningdevkit';

let nextId = 1n;

/** One TCP connection bound to one PeerManager. */
export class TcpPeerLink {
  readonly id = nextId++;
  readonly descriptor: ldk.SocketDescriptor;
  private closedByLdk = false;
  private closed = false;

  private constructor(
    private readonly peerManager: ldk.PeerManager,
    private readonly socket: Socket,
    private readonly onActivity: () => void,
  ) {
    const link = this;
    socket.setNoDelay(true);
    this.descriptor = ldk.SocketDescriptor.new_impl({
      send_data(data: Uint8Array, resumeRead: boolean): number {
        if (resumeRead) socket.resume();
        if (link.closed || link.closedByLdk) return 0;
        if (data.length > 0) socket.write(Buffer.from(data));
        onActivity();
        return data.length;
      },
      disconnect_socket(): void {
        link.closedByLdk = true;
        socket.destroy();
        onActivity();
      },
      eq(other: ldk.SocketDescriptor): boolean {
        return other.hash() === link.id;
      },
      hash(): bigint {
        return link.id;
      },
    });
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('close', () => this.onClose());
    socket.on('error', () => {
      /* 'close' follows */
    });
  }

  /** Connects `peerManager` to the node `nodeId` listening at host:port. */
  static async connect(peerManager: ldk.PeerManager, nodeId: Uint8Array, host: string, port: number, onActivity: () => void = () => {}): Promise<TcpPeerLink> {
    const socket = connect({ host, port });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const link = new TcpPeerLink(peerManager, socket, onActivity);
    const init = peerManager.new_outbound_connection(nodeId, link.descriptor, ldk.Option_SocketAddressZ.constructor_none());
    if (!(init instanceof ldk.Result_CVec_u8ZPeerHandleErrorZ_OK)) {
      link.closedByLdk = true;
      socket.destroy();
      throw new Error('outbound LDK handshake could not start');
    }
    socket.write(Buffer.from(init.res));
    onActivity();
    return link;
  }

  /** Binds an accepted socket to `peerManager` as an inbound connection. */
  static accept(peerManager: ldk.PeerManager, socket: Socket, onActivity: () => void = () => {}): TcpPeerLink {
    const link = new TcpPeerLink(peerManager, socket, onActivity);
    const res = peerManager.new_inbound_connection(link.descriptor, ldk.Option_SocketAddressZ.constructor_none());
    if (!res.is_ok()) {
      link.closedByLdk = true;
      socket.destroy();
    }
    return link;
  }

  private onData(chunk: Buffer): void {
    if (this.closed || this.closedByLdk) return;
    const res = this.peerManager.read_event(this.descriptor, chunk);
    if (res instanceof ldk.Result_boolPeerHandleErrorZ_OK) {
      if (res.res) this.socket.pause();
    } else {
      // LDK already dropped the peer: never tell it about this descriptor again.
      this.closedByLdk = true;
      this.socket.destroy();
    }
    this.peerManager.process_events();
    this.onActivity();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.closedByLdk) this.peerManager.socket_disconnected(this.descriptor);
    this.onActivity();
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Accepts LDK peer connections for one PeerManager on a TCP port. */
export class TcpPeerListener {
  private readonly server: Server;
  /** Open links (a link leaves the set when its socket closes, so reconnects do not pile up). */
  readonly links = new Set<TcpPeerLink>();

  /** `peerManager` is read on every accept, so a restored node can take over the port. */
  constructor(peerManager: () => ldk.PeerManager, onActivity: () => void = () => {}) {
    this.server = createServer((socket) => {
      const link = TcpPeerLink.accept(peerManager(), socket, onActivity);
      this.links.add(link);
      socket.once('close', () => this.links.delete(link));
    });
  }

  async listen(port = 0, host = '127.0.0.1'): Promise<number> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, resolve);
    });
    const address = this.server.address();
    if (!address || typeof address === 'string') throw new Error('listener has no TCP address');
    return address.port;
  }

  async close(): Promise<void> {
    for (const link of this.links) link.close();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
