/**
 * The sync bridge's worker: rebuilds a VssClient from its plain config and performs the
 * VSS requests the blocked thread hands it. It owns no store state; it only does HTTP.
 *
 * Protocol: every message to the parent is posted on the port FIRST, then the shared
 * counter is incremented and notified, so a parent woken by the counter always finds it.
 * The one exception is a 'retrying' note (a failed attempt the client will retry): it need
 * not wake the parent, which reads it when it wakes anyway, at the latest at its deadline.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { workerData, type MessagePort } from 'node:worker_threads';
import type { VssClientConfig } from '../client/index.js';
import type { VssOperation } from '../protocol/index.js';

interface BridgeData {
  port: MessagePort;
  signal: SharedArrayBuffer;
  config: VssClientConfig;
}

type Inbound = { type: 'call'; id: number; operation: VssOperation; body: Uint8Array } | { type: 'cancel'; id: number };

const { port, signal, config } = workerData as BridgeData;
const counter = new Int32Array(signal);

// Slot 0 of `signal` counts messages for the parent's Atomics.wait; slots 1 and 2 carry this
// worker's exit report, written by the supervisor thread that started it (sync-bridge.ts).

function send(message: unknown): void {
  port.postMessage(message);
  Atomics.add(counter, 0, 1);
  Atomics.notify(counter, 0);
}

try {
  // Loaded dynamically so a failure to load is reported instead of silently killing the worker.
  const { vssClientFromConfig, nodeHttpFetch } = await import('../client/index.js');
  const { REQUEST_CODECS, RESPONSE_CODECS, toWireError } = await import('./wire.js');
  // Which call a retry belongs to: the client's onRetry hook is per client, not per call.
  const calls = new AsyncLocalStorage<number>();
  const client = vssClientFromConfig(config, {
    // With tlsCa the client builds this transport itself, trusting that CA.
    fetch: config.tlsCa === undefined ? nodeHttpFetch() : undefined,
    // A blocked caller whose deadline passes while the client retries must learn why the
    // attempts failed (server down, 5xx...), not just that no answer came.
    onRetry: ({ error }) => {
      const id = calls.getStore();
      if (id !== undefined) port.postMessage({ type: 'retrying', id, error: toWireError(error) });
    },
  });
  const inFlight = new Map<number, AbortController>();

  const perform = async (operation: VssOperation, body: Uint8Array, abort: AbortSignal): Promise<Uint8Array> => {
    switch (operation) {
      case 'getObject':
        return RESPONSE_CODECS.getObject.encode(await client.getObject(REQUEST_CODECS.getObject.decode(body), { signal: abort })).finish();
      case 'putObjects':
        return RESPONSE_CODECS.putObjects.encode(await client.putObjects(REQUEST_CODECS.putObjects.decode(body), { signal: abort })).finish();
      case 'deleteObject':
        return RESPONSE_CODECS.deleteObject.encode(await client.deleteObject(REQUEST_CODECS.deleteObject.decode(body), { signal: abort })).finish();
      case 'listKeyVersions':
        return RESPONSE_CODECS.listKeyVersions
          .encode(await client.listKeyVersions(REQUEST_CODECS.listKeyVersions.decode(body), { signal: abort }))
          .finish();
      default:
        throw new TypeError(`unknown VSS operation ${String(operation)}`);
    }
  };

  port.on('message', (message: Inbound) => {
    if (message.type === 'cancel') {
      inFlight.get(message.id)?.abort();
      return;
    }
    const controller = new AbortController();
    inFlight.set(message.id, controller);
    calls.run(message.id, () => perform(message.operation, message.body, controller.signal)).then(
      (body) => send({ type: 'result', id: message.id, ok: true, body }),
      (error: unknown) => send({ type: 'result', id: message.id, ok: false, error: toWireError(error) }),
    ).finally(() => inFlight.delete(message.id));
  });
  send({ type: 'ready' });
} catch (error) {
  send({ type: 'fatal', message: `sync bridge worker failed to start: ${(error as Error)?.stack ?? String(error)}` });
}
