/**
 * A TCP fault proxy to put between a wallet and its VSS server.
 *
 * It forwards bytes unchanged and, switched at run time from a test, injects the failures a
 * wallet meets in the field: link latency, connections closed or reset before the request
 * reaches the server or after the server has acted on it (the response is lost), a black hole
 * that accepts and never answers, and a full outage in which connections are refused.
 *
 * It works on raw TCP rather than HTTP so that every failure is a real socket event (FIN, RST,
 * refused connect, silence) seen by the client's own HTTP stack exactly as on a real network.
 * Where it needs the notion of a "request" (per-request latency, faults at the start of a request
 * or of a response) it reads HTTP/1.1 message boundaries with http-parser-js (start lines, headers,
 * Content-Length and chunked bodies), so that `Expect: 100-continue`, a body still arriving after an
 * early answer and pipelined requests are counted right; the bytes themselves are forwarded
 * unchanged. Traffic it cannot read as HTTP/1.1 falls back to turn-taking: a client→server burst
 * is a request, the server→client burst that follows is its response.
 */
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { HTTPParser } from 'http-parser-js';

/** Where the proxy forwards to. */
export interface ProxyTarget {
  host: string;
  port: number;
}

export interface FaultProxyOptions {
  /** The server to forward to: `{ host, port }` or a URL such as `http://127.0.0.1:8080`. */
  target: ProxyTarget | string;
  /** Interface to listen on; default 127.0.0.1. */
  host?: string;
  /** Port to listen on; default 0 (any free port). The port is kept across an outage. */
  port?: number;
  /** Source of randomness for `probability`; inject a seeded one for reproducible tests. */
  random?: () => number;
}

/** Added latency; every field defaults to 0. */
export interface LatencySettings {
  /** Delay of every chunk travelling from the client to the server. */
  toServerMs?: number;
  /** Delay of every chunk travelling from the server to the client. */
  toClientMs?: number;
  /** Extra delay before each request (each new client→server burst) is forwarded. */
  perRequestMs?: number;
}

/** When a drop or reset hits a connection. */
export type FaultPhase =
  /** Before the request reaches the server: new connections are hit as soon as they are accepted,
   *  kept-alive ones when they next send; the server never sees the request. */
  | 'request'
  /** After the server has received the request, when its (final) response starts to come back:
   *  the server acted on the request but the client never learns the outcome. A `100 Continue`
   *  is let through. */
  | 'response';

export interface ConnectionFaultOptions {
  /** When the fault hits; default `'request'`. */
  at?: FaultPhase;
  /** Chance in [0, 1] that each request/response is hit; default 1. */
  probability?: number;
  /** Hit this many requests/responses, then return to normal by itself; default unlimited. */
  times?: number;
}

export type FaultMode =
  | { kind: 'none' }
  | { kind: 'drop'; at: FaultPhase; probability: number; remaining: number }
  | { kind: 'reset'; at: FaultPhase; probability: number; remaining: number }
  | { kind: 'blackhole' }
  | { kind: 'outage' };

export interface FaultProxyStats {
  /** Connections the proxy accepted since it started. */
  connectionsAccepted: number;
  /** Client connections currently open. */
  connectionsOpen: number;
  /** Connections closed with a FIN by a `drop` fault. */
  connectionsDropped: number;
  /** Connections closed with an RST by a `reset` fault, an outage, or a failed upstream. */
  connectionsReset: number;
  /** Connections to the server that failed (refused, reset by the server, …). */
  upstreamFailures: number;
  /** HTTP/1.1 requests seen (client→server bursts for traffic that is not HTTP/1.1). */
  requests: number;
  /** Bytes delivered to the server. */
  bytesToServer: number;
  /** Bytes delivered to the client. */
  bytesToClient: number;
}

/** Above this many held bytes in one direction the proxy stops reading that side (TCP backpressure). */
const HIGH_WATER_BYTES = 1 << 20;

interface QueuedChunk {
  data: Buffer;
  deliverAt: number;
}

/**
 * One direction of one connection: chunks wait here until their latency has elapsed and the
 * proxy is not holding traffic, then are written in arrival order; the source's FIN follows the
 * last chunk.
 */
class Lane {
  private readonly queue: QueuedChunk[] = [];
  private queuedBytes = 0;
  private lastDeliverAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private sourceEnded = false;
  private waitingForDrain = false;
  private closed = false;
  /** Set when the source was reset: runs instead of passing a FIN once the queue is delivered. */
  private afterLast: (() => void) | undefined;
  /** Writes handed to the destination socket that it has not yet passed to the system. */
  private unflushed = 0;

  constructor(
    private readonly source: Socket,
    /** Null while the connection to the server is not open yet (accepted in a black hole). */
    private dest: Socket | null,
    private readonly isHeld: () => boolean,
    private readonly onDelivered: (bytes: number) => void,
  ) {}

  connectTo(dest: Socket): void {
    this.dest = dest;
    this.pump();
  }

  push(data: Buffer, delayMs: number): void {
    if (this.closed) return;
    // Chunks never overtake each other, whatever the latency was when each arrived.
    const deliverAt = Math.max(Date.now() + delayMs, this.lastDeliverAt);
    this.lastDeliverAt = deliverAt;
    this.queue.push({ data, deliverAt });
    this.queuedBytes += data.length;
    if (this.queuedBytes > HIGH_WATER_BYTES) this.source.pause();
    this.pump();
  }

  /** The source sent its FIN: pass it on once everything before it has been delivered. */
  endOfSource(): void {
    this.sourceEnded = true;
    this.pump();
  }

  /** Whether bytes handed to this lane have not all been passed to the destination's system yet. */
  get pending(): boolean {
    return !this.closed && (this.queue.length > 0 || this.unflushed > 0);
  }

  /** Whether the destination is open and bytes are still waiting for it. */
  get delivering(): boolean {
    return !this.closed && this.dest !== null && !this.dest.destroyed && this.queue.length > 0;
  }

  /**
   * The source was reset: deliver what is already on its way (on schedule), then run `then`
   * instead of passing a FIN. Left undelivered if the lane is closed meanwhile.
   */
  resetOfSource(then: () => void): void {
    this.sourceEnded = true;
    this.afterLast = then;
    this.pump();
  }

  pump(): void {
    const dest = this.dest;
    if (this.closed || dest === null || this.isHeld()) return;
    if (dest.destroyed) {
      this.close();
      return;
    }
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.deliverAt <= now) {
      const { data } = this.queue.shift()!;
      this.queuedBytes -= data.length;
      this.onDelivered(data.length);
      this.unflushed += 1;
      dest.write(data, () => {
        this.unflushed -= 1;
        // A reset waits for the last bytes to be out (a connect still under way included).
        if (this.unflushed === 0 && this.afterLast !== undefined) this.pump();
      });
    }
    if (dest.writableNeedDrain) {
      // Stop reading until the destination has taken what it was given.
      this.source.pause();
      if (!this.waitingForDrain) {
        this.waitingForDrain = true;
        dest.once('drain', () => {
          this.waitingForDrain = false;
          this.pump();
        });
      }
    } else if (this.queuedBytes <= HIGH_WATER_BYTES && !this.source.destroyed) {
      this.source.resume();
    }
    if (this.queue.length > 0) {
      if (this.timer === undefined) {
        this.timer = setTimeout(() => {
          this.timer = undefined;
          this.pump();
        }, Math.max(0, this.queue[0]!.deliverAt - now));
      }
    } else if (this.sourceEnded && this.afterLast !== undefined) {
      if (this.unflushed > 0) return;
      const then = this.afterLast;
      this.afterLast = undefined;
      then();
    } else if (this.sourceEnded && !dest.writableEnded) {
      dest.end();
    }
  }

  close(): void {
    this.closed = true;
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.queue.length = 0;
    this.queuedBytes = 0;
  }
}

// --- HTTP/1.1 message boundaries ------------------------------------------------------------
//
// Turn-taking ("a client→server burst is a request") miscounts whenever the two sides do not
// alternate: a body sent after `100 Continue` looked like a second request, a body still arriving
// after an early answer (413) too, pipelined requests looked like one, and a response fault fired
// at the `100 Continue` before the server even had the body. So the proxy reads where each message
// starts, with http-parser-js. Anything it cannot read as HTTP/1.1 (another protocol, an upgrade,
// a malformed head) falls back to turn-taking.

/** A piece of one direction's bytes, in order; `start` when a message begins with it. */
interface Piece {
  data: Buffer;
  /** A message starts here; `interim` for a 1xx response (another response follows for the same request). */
  start?: { interim: boolean };
}

/**
 * http-parser-js says that a head or a message is complete, not where it ends: that is its read
 * position `offset` in the chunk being executed, which it keeps on the instance (not in its typings).
 */
type Parser = InstanceType<typeof HTTPParser> & { readonly offset: number };
type HeadInfo = Parameters<Parser[typeof HTTPParser.kOnHeadersComplete]>[0];

/**
 * The parser counts toward its head size limit (80 KiB) every byte of an `execute` call that ends
 * in or before a head, the message before included; fed in slices, it does not refuse the head
 * after a large body (or an idle connection after one) for the body's size.
 */
const PARSE_SLICE_BYTES = 16 * 1024;

/**
 * What a start line can begin with. The parser judges a start line once it has all of it; other
 * protocols (TLS) may never send a line end, so their first bytes tell that a head is not coming.
 */
const STARTS = { request: HTTPParser.methods.map((method) => `${method} `), response: ['HTTP/1.'] };
const PROBE_CHARS = Math.max(...[...STARTS.request, ...STARTS.response].map((start) => start.length));

/**
 * Whether the parser frames a head's body as its peer does. It takes any Transfer-Encoding but a
 * plain `chunked` for no coding (`gzip, chunked` is chunked; a request with another coding has no
 * length) and reads Content-Length with `+`, so that `abc` or `-1` would derail it.
 */
function framable(headers: string[]): boolean {
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!.toLowerCase();
    if (name === 'transfer-encoding' && headers[i + 1]!.toLowerCase() !== 'chunked') return false;
    if (name === 'content-length' && !/^\d+$/.test(headers[i + 1]!)) return false;
  }
  return true;
}

/** Thrown from a parser callback: the head cannot be read with confidence. */
class Unreadable extends Error {}

/**
 * Reads one direction of an HTTP/1.1 connection and cuts it into pieces at message starts.
 * Request starts are reported at their first byte (nothing is held back); a response's head is
 * held until complete, so that a 1xx answer is known as interim before any of it is forwarded.
 */
class MessageReader {
  /** Null once this direction is not read any more. */
  private parser: Parser | null;
  private phase: 'idle' | 'head' | 'body' = 'idle';
  /** The first bytes of the current head, until they show whether it can be HTTP/1.x. */
  private probe = '';
  /** A response head, held until it is complete. */
  private held: Buffer[] = [];
  /** The current message is the last one that can be read (an upgrade or CONNECT). */
  private lastMessage = false;
  // During feed(): the chunk, how far it is taken in, and the piece being built (from `from`).
  private chunk: Buffer = Buffer.alloc(0);
  private at = 0;
  private from = 0;
  private start: Piece['start'];
  private pieces: Piece[] = [];

  constructor(
    private readonly kind: 'request' | 'response',
    /** Methods of the requests read and not yet answered with a final response, oldest first. */
    private readonly pendingMethods: string[],
  ) {
    const parser = new HTTPParser(kind === 'request' ? HTTPParser.REQUEST : HTTPParser.RESPONSE) as Parser;
    parser[HTTPParser.kOnHeadersComplete] = (info) => this.headRead(info);
    parser[HTTPParser.kOnMessageComplete] = () => this.messageEnd();
    this.parser = parser;
  }

  get opaque(): boolean {
    return this.parser === null;
  }

  /** Stops reading: everything from now on is passed through without boundaries. */
  giveUp(): void {
    this.parser = null;
    this.held = [];
  }

  /** Bytes of a response head still held when the server closed its side. */
  takeHeld(): Buffer | undefined {
    if (this.parser === null || this.phase !== 'head') return undefined;
    const held = Buffer.concat(this.held);
    this.giveUp();
    return held;
  }

  feed(chunk: Buffer): Piece[] {
    this.chunk = chunk;
    this.at = this.from = 0;
    for (let at = 0; at < chunk.length && this.parser !== null; at += PARSE_SLICE_BYTES) {
      let result: number | Error;
      try {
        result = this.parser.execute(chunk, at, Math.min(PARSE_SLICE_BYTES, chunk.length - at));
      } catch (error) {
        if (!(error instanceof Unreadable)) throw error;
        result = error;
      }
      if (result instanceof Error) {
        // What follows still starts a message (a request is counted, a response head leaves).
        this.advance(chunk.length);
        this.stop();
      }
    }
    if (this.parser !== null) this.advance(chunk.length);
    this.cut(chunk.length);
    const pieces = this.pieces;
    this.pieces = [];
    return pieces;
  }

  /** Takes in chunk[at, to): finds where a message starts, holds a response head, checks its first bytes. */
  private advance(to: number): void {
    const chunk = this.chunk;
    if (this.phase === 'idle') {
      // Empty lines between messages belong to the one before (RFC 9112, 2.2).
      while (this.at < to && (chunk[this.at] === 0x0d || chunk[this.at] === 0x0a)) this.at += 1;
      if (this.at === to) return;
      this.cut(this.at);
      if (this.kind === 'request') this.start = { interim: false };
      this.phase = 'head';
      this.probe = '';
    }
    if (this.phase === 'head') {
      if (this.kind === 'response') {
        this.held.push(chunk.subarray(this.at, to));
        this.from = to;
      }
      if (this.probe.length < PROBE_CHARS) {
        this.probe += chunk.toString('latin1', this.at, Math.min(to, this.at + PROBE_CHARS - this.probe.length));
        const probe = this.probe;
        // Not HTTP/1.1 (TLS, another protocol): nothing to wait for, nothing to hold back.
        if (!STARTS[this.kind].some((start) => (probe.length < start.length ? start.startsWith(probe) : probe.startsWith(start)))) this.stop();
      }
    }
    this.at = to;
  }

  private headRead(info: HeadInfo): number {
    if (this.parser === null) return 0;
    this.advance(this.parser.offset);
    if (this.opaque) return 0;
    if (!framable(info.headers)) throw new Unreadable();
    let noBody = false;
    if (this.kind === 'request') {
      this.pendingMethods.push(HTTPParser.methods[info.method] ?? '');
    } else {
      const interim = info.statusCode < 200 && info.statusCode !== 101;
      // An interim answer leaves its request waiting for the final one.
      const method = interim ? this.pendingMethods[0] : this.pendingMethods.shift();
      // Only the request tells that a response to HEAD has no body, whatever its head says.
      noBody = info.statusCode < 200 || info.statusCode === 204 || info.statusCode === 304 || method === 'HEAD';
      this.pieces.push({ data: Buffer.concat(this.held), start: { interim } });
      this.held = [];
    }
    this.lastMessage = info.upgrade || info.statusCode === 101;
    this.phase = 'body';
    // Truthy: the parser skips the body.
    return noBody ? 1 : 0;
  }

  private messageEnd(): void {
    if (this.parser === null) return;
    this.advance(this.parser.offset);
    this.phase = 'idle';
    // After an upgrade or CONNECT the stream is not HTTP any more.
    if (this.lastMessage) this.stop();
  }

  /** Stops reading; a response head that cannot be read is still the start of a message and leaves now. */
  private stop(): void {
    if (this.parser === null) return;
    if (this.phase === 'head' && this.kind === 'response') this.pieces.push({ data: Buffer.concat(this.held), start: { interim: false } });
    this.giveUp();
  }

  /** Ends the piece being built at `to` (a piece that starts a message is kept even when empty). */
  private cut(to: number): void {
    const data = this.chunk.subarray(this.from, to);
    if (data.length > 0 || this.start !== undefined) this.pieces.push(this.start === undefined ? { data } : { data, start: this.start });
    this.from = to;
    this.start = undefined;
  }
}

/** How a fault ends a connection: 'drop' sends a FIN, 'reset' an RST. */
type ConnectionFault = 'drop' | 'reset';

/** A client connection and, once opened, its connection to the server. */
class ProxiedConnection {
  private upstream: Socket | null = null;
  private readonly toServer: Lane;
  private toClient: Lane | null = null;
  /** Where requests and responses start (HTTP/1.1); once either side cannot be read, turn-taking. */
  private readonly pendingMethods: string[] = [];
  private readonly requests = new MessageReader('request', this.pendingMethods);
  private readonly responses = new MessageReader('response', this.pendingMethods);
  /** Turn-taking, for traffic that is not readable HTTP/1.1: true while the client sends, until the server answers. */
  private clientTurn = false;
  /** … and true while the server answers, until the client sends again. */
  private serverTurn = false;
  /**
   * A fault hit a request or response behind others: what came before it in that direction is
   * being delivered, then the connection ends. Nothing more is taken from the client meanwhile,
   * nor from the server once the cut is in its direction.
   */
  private cutting: FaultPhase | undefined;
  /**
   * The accept-time check already stood for the first request's check, against the fault in
   * force then (its generation, see `FaultProxy.faultGeneration`); undefined once used.
   */
  private acceptCheckedGeneration: number | undefined;
  private finished = false;
  /** The client reset the connection; the request bytes still held are being delivered. */
  private passingReset = false;

  constructor(
    private readonly client: Socket,
    private readonly proxy: FaultProxy,
  ) {
    this.toServer = new Lane(client, null, () => proxy.isHolding(), (n) => proxy.countToServer(n));
    client.on('data', (chunk: Buffer) => this.fromClient(chunk));
    client.on('end', () => this.toServer.endOfSource());
    client.on('error', (error: NodeJS.ErrnoException) => (error.code === 'ECONNRESET' ? this.clientReset() : this.finish('destroy')));
    client.on('close', () => {
      if (!this.passingReset) this.finish('destroy');
    });
  }

  /** Runs the 'request' fault check for a fresh connection; true when the connection was hit. */
  hitOnAccept(): boolean {
    this.acceptCheckedGeneration = this.proxy.faultGeneration;
    const hit = this.proxy.connectionFaultFor('request');
    if (hit === null) return false;
    this.finish(hit);
    return true;
  }

  /** Opens the connection to the server (at once, or when a black hole lifts). */
  openUpstream(target: ProxyTarget): void {
    if (this.upstream !== null || this.finished) return;
    const upstream = connect({ host: target.host, port: target.port, allowHalfOpen: true });
    upstream.setNoDelay(true);
    this.upstream = upstream;
    this.toClient = new Lane(upstream, this.client, () => this.proxy.isHolding(), (n) => this.proxy.countToClient(n));
    upstream.on('data', (chunk: Buffer) => this.fromServer(chunk));
    upstream.on('end', () => {
      // A response head held back while being read still goes to the client before the FIN.
      const held = this.responses.takeHeld();
      if (held !== undefined && held.length > 0 && !this.finished && !this.passingReset) this.toClient?.push(held, this.proxy.latency.toClientMs);
      this.toClient?.endOfSource();
    });
    upstream.on('error', () => {
      // The server refused or reset us: the client sees a reset, as it would talking to the
      // server directly.
      this.proxy.countUpstreamFailure();
      this.finish('reset');
    });
    this.toServer.connectTo(upstream);
  }

  /**
   * The client reset the connection. Bytes of its request still held for latency were already
   * on their way: on a real network they reach the server before the RST, which may then act on
   * the request. So they are delivered on schedule, then the server's side is reset in turn. In
   * a black hole nothing gets through: the held bytes are lost with the connection.
   */
  private clientReset(): void {
    if (this.finished || this.passingReset) return;
    const upstream = this.upstream;
    if (upstream === null || this.proxy.isHolding() || !this.toServer.delivering) {
      this.finish('destroy');
      return;
    }
    this.passingReset = true;
    // The client is gone: a response has nowhere to go.
    this.toClient?.close();
    this.toServer.resetOfSource(() => {
      upstream.resetAndDestroy();
      this.finish('destroy');
    });
  }

  /** Kicks both lanes, e.g. when a black hole lifts. */
  pump(): void {
    this.toServer.pump();
    this.toClient?.pump();
  }

  /** Cuts one direction's chunk at message starts (or at turns, when it is not readable HTTP/1.1). */
  private piecesOf(reader: MessageReader, chunk: Buffer, newTurn: boolean): Piece[] {
    const other = reader === this.requests ? this.responses : this.requests;
    if (!reader.opaque && !other.opaque) {
      const pieces = reader.feed(chunk);
      // Both directions are read or neither: an upgrade seen on one side ends the other's framing too.
      if (!reader.opaque) return pieces;
      other.giveUp();
      return pieces;
    }
    return [newTurn ? { data: chunk, start: { interim: false } } : { data: chunk }];
  }

  private fromClient(chunk: Buffer): void {
    if (this.finished || this.cutting !== undefined) return;
    const pieces = this.piecesOf(this.requests, chunk, !this.clientTurn);
    this.clientTurn = true;
    this.serverTurn = false;
    for (const piece of pieces) {
      const newRequest = piece.start !== undefined;
      if (newRequest) {
        this.proxy.countRequest();
        // The accept-time check stands only if no other fault was switched on since: a
        // connection opened before `drop()`/`reset()` is hit at its first request all the same.
        const checkedAtAccept = this.acceptCheckedGeneration === this.proxy.faultGeneration;
        this.acceptCheckedGeneration = undefined;
        if (!checkedAtAccept) {
          const hit = this.proxy.connectionFaultFor('request');
          if (hit !== null) {
            this.cutAfter('request', hit);
            return;
          }
        }
      }
      const { toServerMs, perRequestMs } = this.proxy.latency;
      this.toServer.push(piece.data, toServerMs + (newRequest ? perRequestMs : 0));
    }
  }

  private fromServer(chunk: Buffer): void {
    // After a client reset the response has nowhere to go (and must not consume a fault).
    if (this.finished || this.passingReset || this.cutting === 'response') return;
    const pieces = this.piecesOf(this.responses, chunk, !this.serverTurn);
    this.serverTurn = true;
    this.clientTurn = false;
    this.acceptCheckedGeneration = undefined;
    for (const piece of pieces) {
      // A 1xx (`100 Continue`) is not the answer: the server has not acted on the request yet.
      if (piece.start !== undefined && !piece.start.interim) {
        const hit = this.proxy.connectionFaultFor('response');
        if (hit !== null) {
          this.cutAfter('response', hit);
          return;
        }
      }
      this.toClient?.push(piece.data, this.proxy.latency.toClientMs);
    }
  }

  /**
   * A fault hit a message: the connection ends there. Bytes of the messages before it (pipelined
   * requests, earlier responses) that the proxy still holds are delivered first, as they had
   * already gone past the point of the fault; nothing after it is forwarded.
   */
  private cutAfter(phase: FaultPhase, hit: ConnectionFault): void {
    const lane = phase === 'request' ? this.toServer : this.toClient;
    if (lane === null || !lane.pending) {
      this.finish(hit);
      return;
    }
    this.cutting = phase;
    lane.resetOfSource(() => this.finish(hit));
  }

  /**
   * Ends the connection for good: 'drop' closes the client side with a FIN, 'reset' with an RST,
   * 'destroy' tears down whatever is left after the client or the server went away.
   */
  finish(how: ConnectionFault | 'destroy'): void {
    if (this.finished) return;
    this.finished = true;
    this.toServer.close();
    this.toClient?.close();
    this.upstream?.destroy();
    const client = this.client;
    if (how === 'drop') {
      this.proxy.countDropped();
      // FIN first; close the socket once it is out, so a client that never closes its own side
      // cannot pin the connection.
      client.end(() => client.destroy());
    } else if (how === 'reset') {
      this.proxy.countReset();
      if (!client.destroyed) client.resetAndDestroy();
    } else {
      client.destroy();
    }
    this.proxy.forget(this);
  }
}

function parseTarget(target: ProxyTarget | string): ProxyTarget {
  if (typeof target !== 'string') return target;
  const url = new URL(target);
  const defaultPort = url.protocol === 'https:' ? 443 : 80;
  // URL keeps IPv6 literals in brackets; net.connect wants them bare.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return { host, port: url.port === '' ? defaultPort : Number(url.port) };
}

function checkDelay(name: string, value: number | undefined): number {
  const v = value ?? 0;
  if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a non-negative number of milliseconds, got ${value}`);
  return v;
}

export class FaultProxy {
  private readonly server: Server;
  private readonly target: ProxyTarget;
  private readonly listenHost: string;
  private listenPort: number;
  private readonly random: () => number;
  private readonly connections = new Set<ProxiedConnection>();
  private fault: FaultMode = { kind: 'none' };
  /** Bumped on every switch of fault (not when a `times` fault runs out by itself). */
  private generation = 0;
  private closed = false;
  /** Current latency settings (milliseconds). */
  latency: Required<LatencySettings> = { toServerMs: 0, toClientMs: 0, perRequestMs: 0 };
  private readonly counters: Omit<FaultProxyStats, 'connectionsOpen'> = {
    connectionsAccepted: 0,
    connectionsDropped: 0,
    connectionsReset: 0,
    upstreamFailures: 0,
    requests: 0,
    bytesToServer: 0,
    bytesToClient: 0,
  };

  private constructor(options: FaultProxyOptions) {
    this.target = parseTarget(options.target);
    this.listenHost = options.host ?? '127.0.0.1';
    this.listenPort = options.port ?? 0;
    this.random = options.random ?? Math.random;
    // Half-open connections are passed on as such: each side's FIN is forwarded separately.
    this.server = createServer({ allowHalfOpen: true }, (socket) => this.accept(socket));
  }

  /** Starts a proxy listening on `host:port` (default 127.0.0.1, any free port). */
  static async start(options: FaultProxyOptions): Promise<FaultProxy> {
    const proxy = new FaultProxy(options);
    await proxy.listen();
    return proxy;
  }

  /** The port the proxy listens on. */
  get port(): number {
    return this.listenPort;
  }

  /** `http://host:port` of the proxy, to give the wallet instead of the server's URL. */
  get url(): string {
    const host = this.listenHost.includes(':') ? `[${this.listenHost}]` : this.listenHost;
    return `http://${host}:${this.listenPort}`;
  }

  /** The fault currently in force (a copy). */
  get mode(): FaultMode {
    return { ...this.fault };
  }

  /** Counters since the proxy started (a snapshot). */
  stats(): FaultProxyStats {
    return { ...this.counters, connectionsOpen: this.connections.size };
  }

  /** Adds latency to traffic from now on; fields left out become 0. Chunks keep their order. */
  setLatency(settings: LatencySettings): void {
    this.latency = {
      toServerMs: checkDelay('toServerMs', settings.toServerMs),
      toClientMs: checkDelay('toClientMs', settings.toClientMs),
      perRequestMs: checkDelay('perRequestMs', settings.perRequestMs),
    };
  }

  /** Closes connections with a FIN instead of forwarding (see {@link FaultPhase} for when). */
  async drop(options: ConnectionFaultOptions = {}): Promise<void> {
    await this.setConnectionFault('drop', options);
  }

  /** Closes connections with an RST (the client sees ECONNRESET) instead of forwarding. */
  async reset(options: ConnectionFaultOptions = {}): Promise<void> {
    await this.setConnectionFault('reset', options);
  }

  /**
   * Accepts connections and holds all traffic in both directions: nothing reaches the server,
   * nothing comes back, the client waits until it times out. Like a network partition, traffic
   * held in open connections flows again if the hole is lifted before the client gives up.
   */
  async blackHole(): Promise<void> {
    await this.switchTo({ kind: 'blackhole' });
  }

  /**
   * The server is gone: the proxy stops listening, so new connections are refused
   * (ECONNREFUSED), and open connections are reset.
   */
  async outage(): Promise<void> {
    await this.switchTo({ kind: 'outage' });
  }

  /** Back to normal: no fault and no added latency. */
  async normal(): Promise<void> {
    this.latency = { toServerMs: 0, toClientMs: 0, perRequestMs: 0 };
    await this.switchTo({ kind: 'none' });
  }

  /** Stops the proxy and closes every connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const connection of [...this.connections]) connection.finish('destroy');
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async setConnectionFault(kind: 'drop' | 'reset', options: ConnectionFaultOptions): Promise<void> {
    const probability = options.probability ?? 1;
    if (!(probability >= 0 && probability <= 1)) throw new RangeError(`probability must be within [0, 1], got ${probability}`);
    const times = options.times ?? Number.POSITIVE_INFINITY;
    if (!(times === Number.POSITIVE_INFINITY || (Number.isInteger(times) && times > 0))) {
      throw new RangeError(`times must be a positive integer, got ${options.times}`);
    }
    await this.switchTo({ kind, at: options.at ?? 'request', probability, remaining: times });
  }

  private async switchTo(next: FaultMode): Promise<void> {
    if (this.closed) throw new Error('FaultProxy is closed');
    const previous = this.fault;
    if (previous.kind === 'outage' && next.kind !== 'outage') {
      // Listen first: if the port cannot be had back, the proxy is still in its outage (and a
      // later call tries again) rather than claiming a mode it does not serve.
      await this.listen();
      if (this.closed) {
        // close() ran while we waited for the port: it found nothing listening to close.
        await new Promise<void>((resolve) => this.server.close(() => resolve()));
        throw new Error('FaultProxy is closed');
      }
    }
    this.fault = next;
    this.generation += 1;
    if (next.kind === 'outage') {
      for (const connection of [...this.connections]) connection.finish('reset');
      if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
      return;
    }
    if (previous.kind === 'blackhole') {
      // The hole lifts: connections accepted during it reach the server now, held bytes flow.
      for (const connection of [...this.connections]) {
        connection.openUpstream(this.target);
        connection.pump();
      }
    }
  }

  private async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(error);
      this.server.once('error', onError);
      this.server.listen({ host: this.listenHost, port: this.listenPort }, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.listenPort = (this.server.address() as AddressInfo).port;
  }

  private accept(socket: Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.counters.connectionsAccepted += 1;
    socket.setNoDelay(true);
    const connection = new ProxiedConnection(socket, this);
    this.connections.add(connection);
    // A connection fault at 'request' hits a fresh connection before the client says anything.
    if (connection.hitOnAccept()) return;
    if (this.fault.kind !== 'blackhole') connection.openUpstream(this.target);
  }

  // --- called by ProxiedConnection -------------------------------------------------------

  /** Which switch of fault is in force; a connection's accept-time check is valid only within one. */
  get faultGeneration(): number {
    return this.generation;
  }

  /** Whether traffic is being held (black hole). */
  isHolding(): boolean {
    return this.fault.kind === 'blackhole';
  }

  /**
   * Decides whether a drop/reset fault hits at this point, consuming one of its `times`.
   * Returns how to end the connection, or null to carry on.
   */
  connectionFaultFor(phase: FaultPhase): ConnectionFault | null {
    const fault = this.fault;
    if ((fault.kind !== 'drop' && fault.kind !== 'reset') || fault.at !== phase) return null;
    if (fault.probability < 1 && !(this.random() < fault.probability)) return null;
    fault.remaining -= 1;
    if (fault.remaining <= 0) this.fault = { kind: 'none' };
    return fault.kind;
  }

  countRequest(): void {
    this.counters.requests += 1;
  }
  countToServer(bytes: number): void {
    this.counters.bytesToServer += bytes;
  }
  countToClient(bytes: number): void {
    this.counters.bytesToClient += bytes;
  }
  countDropped(): void {
    this.counters.connectionsDropped += 1;
  }
  countReset(): void {
    this.counters.connectionsReset += 1;
  }
  countUpstreamFailure(): void {
    this.counters.upstreamFailures += 1;
  }
  forget(connection: ProxiedConnection): void {
    this.connections.delete(connection);
  }
}
