import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Ledger } from '../ledger/types';
import type { QuotaService } from '../quota/service';
import type { WebhookDeliverer } from '../webhooks/deliver';
import type { WebhookStore } from '../webhooks/store';
import type { ApiKey, ApiKeyStore, Scope } from './apikeys';
import { fingerprint, type IdempotencyStore, ledgerKey } from './idempotency';
import { apiJson } from './json';
import type { ServerMetrics } from './metrics';

/** Everything a route can reach; built once by `serve` (or a test). */
export interface ServerDeps {
  readonly ledger: Ledger;
  readonly quota: QuotaService;
  readonly webhooks: WebhookStore;
  readonly apiKeys: ApiKeyStore;
  readonly idempotency: IdempotencyStore;
  readonly metrics: ServerMetrics;
  /** Nudged after a mutation that may have written events, so delivery starts at once. */
  readonly deliverer?: WebhookDeliverer;
  /** Secret for POST /v1/tokens (the Billing Ledger credential's token secret); absent disables signing. */
  readonly tokenSecret?: string;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Least scope the route needs; routes without one are public (health, metrics, OpenAPI, dashboard login). */
    scope?: Scope;
  }
  interface FastifyRequest {
    apiKey?: ApiKey;
  }
}

export interface MutationResult {
  readonly status?: number;
  readonly body: unknown;
  /** For ledger mutations: when the ledger created the result; earlier than the request means a replay. */
  readonly createdAt?: string;
  /**
   * What the idempotency table keeps for replays when it must differ from this answer: an answer carrying a
   * secret (a webhook endpoint's signing secret) is shown once, and the table, kept for ever, holds it without.
   */
  readonly replayBody?: unknown;
}

/**
 * Runs a mutation under its Idempotency-Key: a stored success is replayed
 * byte for byte (header `Idempotent-Replayed: true`; an answer with a secret
 * is stored without it, see `replayBody`), the same key with a different
 * request is IDEMPOTENCY_CONFLICT.
 *
 * `ledger: true` marks a mutation that is exactly one ledger operation (top-up,
 * hold, settle, release, refund): the ledger's own idempotency is the record,
 * under the key `api:<Idempotency-Key>`, with its replay and conflict rules
 * (a key reused for another operation, customer or amount conflicts). No extra
 * write per request, so these ride the ledger's group commit.
 */
export async function mutate(
  deps: ServerDeps,
  req: FastifyRequest,
  reply: FastifyReply,
  fn: (key: (operation: string) => string) => Promise<MutationResult>,
  opts: { ledger?: boolean } = {},
): Promise<FastifyReply> {
  const httpKey = String(req.headers['idempotency-key']);
  if (opts.ledger) {
    const started = Date.now();
    const r = await fn(() => ledgerKey(httpKey));
    if (r.createdAt && Date.parse(r.createdAt) < started - 1) reply.header('idempotent-replayed', 'true');
    deps.deliverer?.poke();
    return reply.code(r.status ?? 200).send(apiJson(r.body));
  }
  const path = req.url.split('?')[0]!;
  const fp = fingerprint(req.method, path, req.body);
  const begun = await deps.idempotency.begin(httpKey, fp);
  if ('replay' in begun) {
    return reply.code(begun.replay.status).header('content-type', 'application/json; charset=utf-8').header('idempotent-replayed', 'true').send(begun.replay.body);
  }
  let status: number;
  let body: string;
  let stored: string;
  try {
    const r = await fn((operation) => ledgerKey(`${operation}:${httpKey}`));
    status = r.status ?? 200;
    body = JSON.stringify(apiJson(r.body));
    stored = r.replayBody === undefined ? body : JSON.stringify(apiJson(r.replayBody));
  } catch (e) {
    await deps.idempotency.abandon(begun.claim);
    throw e;
  }
  // The mutation ran: its answer is sent even if the database fails to record it now (finish keeps it and
  // records it when the database is back), rather than an error that says it did not happen.
  await deps.idempotency.finish(begun.claim, { status, body: stored });
  deps.deliverer?.poke();
  return reply.code(status).header('content-type', 'application/json; charset=utf-8').send(body);
}

/** Who did it, for the ledger's audit trail. */
export function actorOf(req: FastifyRequest): string {
  return req.apiKey ? `api:${req.apiKey.id}` : 'api';
}
