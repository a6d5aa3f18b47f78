/**
 * In-memory peer connections between PeerManagers in one process. LDK calls `send_data`
 * from inside its own calls, where re-entering it is forbidden, so bytes are queued and
 * delivered later by `deliver()` (driven by the network's pump).
 */
import * as ldk from 'lightningdevkit';

let nextDescriptorId = 1n;

/** One side of a connection: the descriptor its PeerManager writes to. */
class SocketEnd {
  readonly id = nextDescriptorId++;
  /** Bytes written by this side's PeerManager, waiting for delivery to the other side. */
  readonly outbox: Uint8Array[] = [];
  /** LDK asked to stop reading (read_event returned true) until send_data resumes it. */
  readPaused = false;
  /** LDK closed this descriptor itself (disconnect_socket): never tell it again. */
  closedByLdk = false;
  /** Bytes this side's PeerManager wrote that were delivered to the other side. */
  bytesDelivered = 0;
  readonly descriptor: ldk.SocketDescriptor;

  constructor(readonly peerManager: ldk.PeerManager, onActivity: () => void) {
    const end = this;
    this.descriptor = ldk.SocketDescriptor.new_impl({
      send_data(data: Uint8Array, resumeRead: boolean): number {
        if (resumeRead) end.readPaused = false;
        if (end.closedByLdk) return 0;
        if (data.length > 0) end.outbox.push(Uint8Array.from(data));
        onActivity();
        return data.length;
      },
      disconnect_socket(): void {
        end.closedByLdk = true;
        onActivity();
      },
      eq(other: ldk.SocketDescriptor): boolean {
        return other.hash() === end.id;
      },
      hash(): bigint {
        return end.id;
      },
    });
  }
}

/** A bidirectional in-memory connection between two PeerManagers. */
export class MemoryConnection {
  private closed = false;

  private constructor(
    private readonly outbound: SocketEnd,
    private readonly inbound: SocketEnd,
  ) {}

  /**
   * Connects `from` (outbound) to `to` (inbound, whose node id is `toNodeId`). The noise
   * handshake completes over subsequent `deliver()` + `process_events()` rounds.
   */
  static open(from: ldk.PeerManager, to: ldk.PeerManager, toNodeId: Uint8Array, onActivity: () => void = () => {}): MemoryConnection {
    const outbound = new SocketEnd(from, onActivity);
    const inbound = new SocketEnd(to, onActivity);
    const conn = new MemoryConnection(outbound, inbound);
    const accepted = to.new_inbound_connection(inbound.descriptor, ldk.Option_SocketAddressZ.constructor_none());
    if (!accepted.is_ok()) throw new Error('in-memory connection: inbound side refused the connection');
    const init = from.new_outbound_connection(toNodeId, outbound.descriptor, ldk.Option_SocketAddressZ.constructor_none());
    if (!(init instanceof ldk.Result_CVec_u8ZPeerHandleErrorZ_OK)) {
      to.socket_disconnected(inbound.descriptor);
      throw new Error('in-memory connection: outbound handshake could not start');
    }
    outbound.outbox.push(init.res);
    onActivity();
    return conn;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Bytes delivered so far that were written by `pm`'s side. */
  bytesSentBy(pm: ldk.PeerManager): number {
    if (this.outbound.peerManager === pm) return this.outbound.bytesDelivered;
    if (this.inbound.peerManager === pm) return this.inbound.bytesDelivered;
    return 0;
  }

  /** True if `pm` is one of the two ends. */
  involves(pm: ldk.PeerManager): boolean {
    return this.outbound.peerManager === pm || this.inbound.peerManager === pm;
  }

  /**
   * Moves queued bytes to the other side. Returns true if anything was delivered or the
   * connection changed state. A side that LDK disconnected closes the whole connection.
   */
  deliver(): boolean {
    if (this.closed) return false;
    if (this.outbound.closedByLdk || this.inbound.closedByLdk) {
      this.close();
      return true;
    }
    let moved = false;
    for (const [from, to] of [
      [this.outbound, this.inbound],
      [this.inbound, this.outbound],
    ] as const) {
      while (from.outbox.length > 0 && !to.readPaused && !this.closed) {
        const bytes = from.outbox.shift()!;
        moved = true;
        from.bytesDelivered += bytes.length;
        const res = to.peerManager.read_event(to.descriptor, bytes);
        if (res instanceof ldk.Result_boolPeerHandleErrorZ_OK) {
          if (res.res) to.readPaused = true;
        } else {
          // LDK already forgot the peer on that side; the other side learns it below.
          to.closedByLdk = true;
          this.close();
        }
      }
    }
    return moved;
  }

  /** Tears the connection down, telling each live side that its peer went away. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const end of [this.outbound, this.inbound]) {
      if (!end.closedByLdk) end.peerManager.socket_disconnected(end.descriptor);
      end.outbox.length = 0;
    }
  }

  /**
   * A crash of one side: that side's PeerManager is abandoned (never called again) and only
   * the surviving side is told the socket closed.
   */
  dropSide(crashed: ldk.PeerManager): void {
    if (this.closed) return;
    this.closed = true;
    for (const end of [this.outbound, this.inbound]) {
      if (end.peerManager !== crashed && !end.closedByLdk) end.peerManager.socket_disconnected(end.descriptor);
      end.outbox.length = 0;
    }
  }
}
