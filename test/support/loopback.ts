import type http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/** A test fake's HTTP server, listening on 127.0.0.1 only, that can cut every open connection. */
export interface Loopback {
  readonly port: number;
  /** `http://127.0.0.1:PORT` */
  readonly origin: string;
  /** Resets every open connection (a fake "going down"). */
  dropConnections(): void;
  /** Stops listening and resets the open connections, so close never waits on a keep-alive client. */
  close(): Promise<void>;
}

/**
 * Listens on loopback (port 0 = any free one) and tracks sockets so close() is
 * immediate. `accept` may refuse a connection (it is then the caller's to destroy).
 */
export async function listenOnLoopback(server: http.Server, opts: { port?: number; accept?: (s: Socket) => boolean } = {}): Promise<Loopback> {
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    if (opts.accept && !opts.accept(s)) return;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const dropConnections = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    port,
    origin: `http://127.0.0.1:${port}`,
    dropConnections,
    async close() {
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      dropConnections();
      await done;
    },
  };
}
