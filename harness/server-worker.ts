/**
 * Worker-thread entry of VssServerThread: owns one storage backend and an HTTP listener
 * that can be stopped and restarted on the same port with the same data.
 */
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import { openBackend, startVssServer, type BackendOption, type StartedVssServer, type StorageBackend } from '../src/server/index.js';

interface WorkerInput {
  backend: Exclude<BackendOption, StorageBackend>;
}

type Command = { id: number; cmd: 'stop' | 'resume' | 'close' };

const port = parentPort!;
const input = workerData as WorkerInput;
const logger = pino({ level: 'silent' });
let backend: StorageBackend;
let server: StartedVssServer | undefined;
let listenPort = 0;

async function listen(): Promise<void> {
  server = await startVssServer({ backend, port: listenPort, auth: { kind: 'noop' }, logger, shutdownGraceMs: 200 });
  listenPort = server.port;
}

async function handle(msg: Command): Promise<void> {
  switch (msg.cmd) {
    case 'stop':
      await server?.close();
      server = undefined;
      return;
    case 'resume':
      if (!server) await listen();
      return;
    case 'close':
      await server?.close();
      server = undefined;
      await backend.close();
      return;
  }
}

try {
  ({ backend } = await openBackend(input.backend, logger));
  await listen();
  port.postMessage({ ready: true, url: server!.url, port: listenPort });
} catch (err) {
  port.postMessage({ ready: false, error: err instanceof Error ? err.message : String(err) });
}

port.on('message', (msg: Command) => {
  handle(msg).then(
    () => port.postMessage({ id: msg.id, ok: true }),
    (err: unknown) => port.postMessage({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
  );
});
