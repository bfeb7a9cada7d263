import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { BillingError } from '../../errors';
import { MAX_TOKEN_TTL_S, signBillingToken } from '../../identity/token';
import { parseRateCard } from '../../pricing/ratecard';
import { rotationInput } from '../../webhooks/secrets';
import { endpointInput, endpointUpdate } from '../../webhooks/store';
import { actorOf, mutate, type ServerDeps } from '../context';
import { withoutSecret } from '../idempotency';
import { customerId, idempotencyHeaders, queryInt } from '../schemas';

const version = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'rate card version may contain letters, digits, ".", "_" and "-" only');
const endpointParams = z.object({ endpointId: z.string().regex(/^we_[a-f0-9]{32}$/, 'endpoint ids look like "we_…"') });

/** Rate cards, billing tokens, webhook endpoints and events, API keys. */
export function adminRoutes(app: FastifyInstance, deps: ServerDeps): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { ledger, metrics, webhooks } = deps;

  // ---- rate cards
  r.get('/v1/ratecards', { config: { scope: 'read' }, schema: { tags: ['ratecards'], summary: 'Imported rate cards' } }, async () => {
    await ledger.activeRateCard(); // the packaged default exists from first use on
    return { data: await metrics.time('listRateCards', () => ledger.listRateCards()) };
  });

  r.get('/v1/ratecards/:version', { config: { scope: 'read' }, schema: { tags: ['ratecards'], summary: 'A rate card document', params: z.object({ version }) } }, async (req) => {
    const card = await metrics.time('getRateCard', () => ledger.getRateCard(req.params.version));
    return card.document;
  });

  r.post('/v1/ratecards', {
    config: { scope: 'admin' },
    schema: {
      tags: ['ratecards'],
      summary: 'Import a rate card (versions are immutable)',
      headers: idempotencyHeaders,
      querystring: z.object({ activate: z.enum(['true', 'false']).default('false') }).strict(),
      body: z.record(z.unknown()).describe('a rate card document, as in ratecards/*.json'),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      const card = parseRateCard(req.body);
      return { status: 201, body: await metrics.time('importRateCard', () => ledger.importRateCard(card, { activate: req.query.activate === 'true', actor: actorOf(req) })) };
    }),
  );

  r.post('/v1/ratecards/:version/activate', {
    config: { scope: 'admin' },
    schema: { tags: ['ratecards'], summary: 'Make a rate card the active one', params: z.object({ version }), headers: idempotencyHeaders, body: z.object({}).strict().nullish() },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ body: await metrics.time('activateRateCard', () => ledger.activateRateCard(req.params.version, { actor: actorOf(req) })) })));

  // ---- billing tokens
  r.post('/v1/tokens', {
    config: { scope: 'write' },
    schema: {
      tags: ['tokens'],
      summary: 'Sign a billing token for an end user',
      description: 'The token goes into Flowise as overrideConfig.vars.billingToken; nodes verify it with the same secret. Signing changes nothing, so no Idempotency-Key is needed.',
      body: z.object({ customerId, ttlSeconds: z.number().int().min(1).max(MAX_TOKEN_TTL_S).default(3600), requireCustomer: z.boolean().default(true) }).strict(),
    },
  }, async (req) => {
    if (!deps.tokenSecret) throw new BillingError('VALIDATION_ERROR', 'Token signing is off: start serve with FLOWISE_BILLING_TOKEN_SECRET set to the Billing Ledger credential’s token secret', { field: 'tokenSecret' });
    if (req.body.requireCustomer) await ledger.getCustomer(req.body.customerId);
    const now = Math.floor(Date.now() / 1000);
    const token = signBillingToken(deps.tokenSecret, req.body.customerId, { ttlSeconds: req.body.ttlSeconds, now });
    return { token, customerId: req.body.customerId, expiresAt: new Date((now + req.body.ttlSeconds) * 1000).toISOString() };
  });

  // ---- webhook endpoints and events
  r.get('/v1/webhooks/endpoints', { config: { scope: 'admin' }, schema: { tags: ['webhooks'], summary: 'Webhook endpoints (secrets are not shown again)' } }, async () => ({ data: await webhooks.listEndpoints() }));

  r.post('/v1/webhooks/endpoints', {
    config: { scope: 'admin' },
    schema: { tags: ['webhooks'], summary: 'Add an endpoint; the response carries its signing secret, once (a replay under the same Idempotency-Key has secret null)', headers: idempotencyHeaders, body: endpointInput.strict() },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => {
      const made = await webhooks.createEndpoint(req.body, { key: key('createWebhookEndpoint') });
      return { status: 201, body: made, replayBody: withoutSecret(made) };
    }),
  );

  r.get('/v1/webhooks/endpoints/:endpointId', { config: { scope: 'admin' }, schema: { tags: ['webhooks'], summary: 'An endpoint', params: endpointParams } }, async (req) =>
    webhooks.getEndpoint(req.params.endpointId),
  );

  r.patch('/v1/webhooks/endpoints/:endpointId', {
    config: { scope: 'admin' },
    schema: { tags: ['webhooks'], summary: 'Change url, event filter, description or enabled', params: endpointParams, headers: idempotencyHeaders, body: endpointUpdate.strict() },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ body: await webhooks.updateEndpoint(req.params.endpointId, req.body) })));

  r.delete('/v1/webhooks/endpoints/:endpointId', {
    config: { scope: 'admin' },
    schema: { tags: ['webhooks'], summary: 'Remove an endpoint and its undelivered deliveries', params: endpointParams, headers: idempotencyHeaders },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      await webhooks.deleteEndpoint(req.params.endpointId);
      return { body: { deleted: req.params.endpointId } };
    }),
  );

  r.post('/v1/webhooks/endpoints/:endpointId/retry', {
    config: { scope: 'admin' },
    schema: { tags: ['webhooks'], summary: 'Queue failed deliveries to this endpoint again', params: endpointParams, headers: idempotencyHeaders, body: z.object({}).strict().nullish() },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      await webhooks.getEndpoint(req.params.endpointId);
      return { body: { requeued: await webhooks.retryFailed(req.params.endpointId) } };
    }),
  );

  r.post('/v1/webhooks/endpoints/:endpointId/rotate-secret', {
    config: { scope: 'admin' },
    schema: {
      tags: ['webhooks'],
      summary: 'Give the endpoint a new signing secret; the response carries it, once (a replay under the same Idempotency-Key has secret null)',
      description: 'The replaced secret keeps signing deliveries next to the new one for overlapSeconds (default 86400, at most 604800; 0 drops it at once), so the receiver accepts either while it is updated.',
      params: endpointParams,
      headers: idempotencyHeaders,
      body: rotationInput.nullish(),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      const rotated = await webhooks.rotateSecret(req.params.endpointId, req.body ?? {});
      return { body: rotated, replayBody: withoutSecret(rotated) };
    }),
  );

  r.get('/v1/webhooks/events', {
    config: { scope: 'read' },
    schema: {
      tags: ['webhooks'],
      summary: 'Events, newest first (paged with beforeSeq)',
      querystring: z.object({ customerId: customerId.optional(), limit: queryInt(1, 500).default(50), beforeSeq: queryInt(1).optional() }).strict(),
    },
  }, async (req) => {
    const data = await webhooks.listEvents(req.query);
    return { data, nextBeforeSeq: data.length === req.query.limit ? data[data.length - 1]!.seq : null };
  });

  r.get('/v1/webhooks/status', { config: { scope: 'read' }, schema: { tags: ['webhooks'], summary: 'Deliveries pending (to enabled endpoints) with the lag, delivered, failed, paused (held by disabled endpoints)' } }, async () => webhooks.deliveryCounts());

  // ---- API keys (created with the CLI, where the secret is shown once; listed and revoked here too)
  r.get('/v1/apikeys', { config: { scope: 'admin' }, schema: { tags: ['apikeys'], summary: 'API keys (never their secrets)' } }, async () => ({ data: await deps.apiKeys.list() }));

  r.delete('/v1/apikeys/:apiKeyId', {
    config: { scope: 'admin' },
    schema: { tags: ['apikeys'], summary: 'Revoke an API key (within 2 s everywhere)', params: z.object({ apiKeyId: z.string().regex(/^[a-f0-9]{16}$/, 'API key ids are 16 hex digits') }), headers: idempotencyHeaders },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ body: await deps.apiKeys.revoke(req.params.apiKeyId) })));
}
