/**
 * Runs the VSS server in a worker thread, so that a test can block its own thread (the
 * store's synchronous API does) while the server keeps serving. Also runs a TCP proxy in
 * front of it that can be switched into a black hole (accepts and swallows everything,
 * answers nothing), to test deadlines of blocking calls.
 */
import { connect, createServer, type Socket } from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';
import { MemoryBackend, startVssServer, type MemorySnapshot, type VssServerOptions } from '../../../src/server/index.js';

type Request =
  | { id: number; type: 'snapshot' }
  | { id: number; type: 'restore'; snapshot: MemorySnapshot }
  | { id: number; type: 'blackhole'; on: boolean }
  | { id: number; type: 'close' };

const server = await startVssServer({ ...(workerData as VssServerOptions), port: 0 });
let blackhole = false;
const sockets = new Set<Socket>();
const proxy = createServer((client) => {
  const upstream = connect(server.port, '127.0.0.1');
  sockets.add(client).add(upstream);
  client.on('data', (chunk) => {
    if (!blackhole) upstream.write(chunk);
  });
  upstream.on('data', (chunk) => {
    if (!blackhole) client.write(chunk);
  });
  const end = () => {
    client.destroy();
    upstream.destroy();
    sockets.delete(client);
    sockets.delete(upstream);
  };
  client.on('close', end).on('error', end);
  upstream.on('close', end).on('error', end);
});
await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
const proxyPort = (proxy.address() as { port: number }).port;

parentPort!.on('message', async (request: Request) => {
  try {
    let value: unknown;
    if (request.type === 'snapshot') value = (server.backend as MemoryBackend).snapshot();
    else if (request.type === 'restore') (server.backend as MemoryBackend).restore(request.snapshot);
    else if (request.type === 'blackhole') blackhole = request.on;
    else {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => proxy.close(resolve));
      await server.close();
    }
    parentPort!.postMessage({ id: request.id, ok: true, value });
  } catch (error) {
    parentPort!.postMessage({ id: request.id, ok: false, message: (error as Error).message });
  }
});
parentPort!.postMessage({ ready: true, url: server.url, proxyUrl: server.url.replace(`:${server.port}/`, `:${proxyPort}/`) });
