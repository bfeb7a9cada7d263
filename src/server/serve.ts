import type { FastifyInstance } from 'fastify';
import { WebhookDeliverer, type DelivererOptions } from '../webhooks/deliver';
import { openWithEvents } from '../webhooks/open';
import { ApiKeyStore } from './apikeys';
import { buildServer, type ServerOptions } from './app';
import type { ServerDeps } from './context';
import { type IdempotencyLog, IdempotencyStore } from './idempotency';
import { ServerMetrics } from './metrics';
import { migrateServer } from './schema';

export interface ServeOptions extends ServerOptions {
  readonly target: string;
  readonly host?: string;
  readonly port?: number;
  /** Deliver webhooks from this process (default true). */
  readonly deliver?: boolean;
  readonly delivery?: DelivererOptions;
  /** Pause between delivery passes when nothing is due (a mutation through the API starts one at once). */
  readonly pollMs?: number;
  readonly tokenSecret?: string;
  readonly poolSize?: number;
}

export interface RunningServer {
  readonly app: FastifyInstance;
  readonly url: string;
  readonly deps: ServerDeps;
  close(): Promise<void>;
}

/** `flowise-billing serve`: opens the ledger, migrates, listens, delivers webhooks until closed. */
export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  let logError: (e: unknown) => void = () => undefined;
  let log: IdempotencyLog = () => undefined;
  const services = await openWithEvents(opts.target, { actor: 'api', onEventError: (e) => logError(e), poolSize: opts.poolSize });
  try {
    await migrateServer(services.ledger.dialect);
    const metrics = new ServerMetrics();
    let deliverer: WebhookDeliverer | undefined;
    const deps: ServerDeps = {
      ...services,
      apiKeys: new ApiKeyStore(services.ledger.dialect),
      idempotency: new IdempotencyStore(services.ledger.dialect, { log: (level, msg, fields) => log(level, msg, fields) }),
      metrics,
      get deliverer() {
        return deliverer;
      },
      tokenSecret: opts.tokenSecret,
    };
    const app = await buildServer(deps, opts);
    logError = (e) => app.log.error({ err: { message: (e as Error).message } }, 'could not record a webhook event');
    log = (level, msg, fields) => app.log[level](fields, msg);
    if (opts.deliver ?? true) {
      deliverer = new WebhookDeliverer(services.ledger.dialect, {
        ...opts.delivery,
        log: (level, msg, fields) => app.log[level](fields, msg),
      });
    }
    const url = await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 8787 });
    const loop = deliverer?.run(opts.pollMs ?? 1_000);
    return {
      app,
      url,
      deps,
      async close() {
        deliverer?.stop();
        await loop;
        await app.close();
        await deps.idempotency.close();
        await deps.apiKeys.flush();
        await services.close();
      },
    };
  } catch (e) {
    await services.close().catch(() => undefined);
    throw e;
  }
}
