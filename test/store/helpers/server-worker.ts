/**
 * Runs the VSS server in a worker thread, so that a test can block its own thread (the
 * store's synchronous API does) while the server keeps serving.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MemoryBackend, startVssServer, type MemorySnapshot, type VssServerOptions } from '../../../src/server/index.js';

type Request = { id: number; type: 'snapshot' } | { id: number; type: 'restore'; snapshot: MemorySnapshot } | { id: number; type: 'close' };

const server = await startVssServer({ ...(workerData as VssServerOptions), port: 0 });
parentPort!.on('message', async (request: Request) => {
  try {
    if (request.type === 'snapshot') {
      parentPort!.postMessage({ id: request.id, ok: true, value: (server.backend as MemoryBackend).snapshot() });
    } else if (request.type === 'restore') {
      (server.backend as MemoryBackend).restore(request.snapshot);
      parentPort!.postMessage({ id: request.id, ok: true });
    } else {
      await server.close();
      parentPort!.postMessage({ id: request.id, ok: true });
    }
  } catch (error) {
    parentPort!.postMessage({ id: request.id, ok: false, message: (error as Error).message });
  }
});
parentPort!.postMessage({ ready: true, url: server.url });
