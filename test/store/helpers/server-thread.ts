/**
 * Starts the real VSS server in a worker thread (see server-worker.ts). Needed by tests of
 * the synchronous store API: an in-process server would be frozen by the blocked thread.
 */
import { Worker } from 'node:worker_threads';
import type { MemorySnapshot, VssServerOptions } from '../../../src/server/index.js';

export interface ServerThread {
  url: string;
  /** The same server through a proxy that `blackhole(true)` turns into a black hole. */
  proxyUrl: string;
  blackhole(on: boolean): Promise<void>;
  /** MemoryBackend only. */
  snapshot(): Promise<MemorySnapshot>;
  restore(snapshot: MemorySnapshot): Promise<void>;
  close(): Promise<void>;
}

export async function startServerThread(options: Pick<VssServerOptions, 'backend' | 'auth'>): Promise<ServerThread> {
  const entry = new URL('./server-worker.ts', import.meta.url).href;
  const tsx = import.meta.resolve('tsx/esm/api');
  const worker = new Worker(`import(${JSON.stringify(tsx)}).then(({ tsImport }) => tsImport(${JSON.stringify(entry)}, ${JSON.stringify(entry)}));`, {
    eval: true,
    workerData: options,
  });
  const { url, proxyUrl } = await new Promise<{ url: string; proxyUrl: string }>((resolve, reject) => {
    worker.once('error', reject);
    worker.on('message', function onReady(message: { ready?: boolean; url?: string; proxyUrl?: string }) {
      if (message.ready) {
        worker.off('message', onReady);
        resolve({ url: message.url!, proxyUrl: message.proxyUrl! });
      }
    });
  });
  let nextId = 0;
  const request = <T>(message: Record<string, unknown>): Promise<T> => {
    const id = ++nextId;
    return new Promise<T>((resolve, reject) => {
      const onMessage = (reply: { id?: number; ok?: boolean; value?: T; message?: string }) => {
        if (reply.id !== id) return;
        worker.off('message', onMessage);
        if (reply.ok) resolve(reply.value as T);
        else reject(new Error(reply.message));
      };
      worker.on('message', onMessage);
      worker.postMessage({ ...message, id });
    });
  };
  return {
    url,
    proxyUrl,
    blackhole: (on) => request<void>({ type: 'blackhole', on }),
    snapshot: () => request<MemorySnapshot>({ type: 'snapshot' }),
    restore: (snapshot) => request<void>({ type: 'restore', snapshot }),
    close: async () => {
      await request<void>({ type: 'close' });
      await worker.terminate();
    },
  };
}
