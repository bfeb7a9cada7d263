import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { priceChargeType, refuseFreeCharge } from '../../pricing/price';
import { CHARGE_TYPES } from '../../pricing/ratecard';
import { apiJson } from '../json';
import { actorOf, mutate, type ServerDeps } from '../context';
import { customerParams, entityId, idempotencyHeaders, positiveUsd, quantity, usd } from '../schemas';

// `source` says which writer made a charge (api, langchain, flowise): the server sets it, a client cannot pose as another writer.
const metadata = z
  .record(z.union([z.string().max(500), z.number(), z.boolean(), z.null()]))
  .refine((m) => Object.keys(m).length <= 20, 'at most 20 metadata keys')
  .refine((m) => !Object.hasOwn(m, 'source'), "metadata.source is set by the server (it is 'api' here)")
  .optional();

/** Either a ChargeType and quantity priced by the active rate card, or an explicit amount. */
const chargeBody = z
  .object({
    chargeType: z.enum(CHARGE_TYPES).optional(),
    quantity: quantity.optional(),
    amountUsd: positiveUsd('amountUsd').optional(),
    metadata,
  })
  .strict()
  .refine((b) => (b.chargeType !== undefined && b.quantity !== undefined) !== (b.amountUsd !== undefined), 'give either chargeType and quantity (priced by the active rate card) or amountUsd');

/** A ledger result with its creation time, so a replay is flagged. */
const created = <T extends { createdAt: string }>(status: number, value: T) => ({ status, body: value, createdAt: value.createdAt });

/** Charges, refunds and holds. */
export function moneyRoutes(app: FastifyInstance, deps: ServerDeps): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { ledger, metrics } = deps;

  r.post('/v1/customers/:customerId/charges', {
    config: { scope: 'write' },
    schema: { tags: ['charges'], summary: 'Charge a customer now (no hold)', params: customerParams, headers: idempotencyHeaders, body: chargeBody },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => {
      const b = req.body;
      let priced: { amount: bigint; chargeType?: string; quantity?: string; rateCardVersion?: string } = { amount: b.amountUsd ?? 0n };
      if (b.chargeType) {
        const q = priceChargeType(await ledger.activeRateCard(), b.chargeType, b.quantity!);
        priced = { amount: q.amount, chargeType: b.chargeType, quantity: q.quantity, rateCardVersion: q.rateCardVersion };
        refuseFreeCharge(q);
      }
      const ch = await metrics.time('charge', () =>
        ledger.charge({ customerId: req.params.customerId, ...priced, metadata: { source: 'api', ...b.metadata }, idempotencyKey: key('charge'), actor: actorOf(req) }),
      );
      return { status: 201, body: ch };
    }),
  );

  r.get('/v1/charges/:chargeId', {
    config: { scope: 'read' },
    schema: { tags: ['charges'], summary: 'A charge', params: z.object({ chargeId: entityId }) },
  }, async (req) => apiJson(await metrics.time('getCharge', () => ledger.getCharge(req.params.chargeId))));

  r.post('/v1/charges/:chargeId/refunds', {
    config: { scope: 'write' },
    schema: {
      tags: ['charges'],
      summary: 'Refund a charge (all that is left, or amountUsd)',
      params: z.object({ chargeId: entityId }),
      headers: idempotencyHeaders,
      body: z.object({ amountUsd: positiveUsd('amountUsd').optional(), reason: z.string().max(500).optional() }).strict(),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => created(201, await metrics.time('refund', () =>
        ledger.refund({ chargeId: req.params.chargeId, amount: req.body.amountUsd, reason: req.body.reason, idempotencyKey: key('refund'), actor: actorOf(req) }),
      )),
    { ledger: true }),
  );

  r.post('/v1/customers/:customerId/holds', {
    config: { scope: 'write' },
    schema: {
      tags: ['holds'],
      summary: 'Reserve funds before work runs',
      params: customerParams,
      headers: idempotencyHeaders,
      // A $0 hold reserves nothing and guards nothing; metering's own zero holds never come through here.
      body: z.object({ amountUsd: positiveUsd('amountUsd'), ttlSeconds: z.number().int().min(1).max(7 * 24 * 3600).optional(), chargeType: z.enum(CHARGE_TYPES).optional() }).strict(),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => created(201, await metrics.time('hold', () =>
        ledger.hold({
          customerId: req.params.customerId, amount: req.body.amountUsd, ttlMs: req.body.ttlSeconds === undefined ? undefined : req.body.ttlSeconds * 1000,
          chargeType: req.body.chargeType, idempotencyKey: key('hold'), actor: actorOf(req),
        }),
      )),
    { ledger: true }),
  );

  r.get('/v1/holds/:holdId', {
    config: { scope: 'read' },
    schema: { tags: ['holds'], summary: 'A hold', params: z.object({ holdId: entityId }) },
  }, async (req) => apiJson(await metrics.time('getHold', () => ledger.getHold(req.params.holdId))));

  r.post('/v1/holds/:holdId/settle', {
    config: { scope: 'write' },
    schema: {
      tags: ['holds'],
      summary: 'Settle a hold into a charge (the rest is released)',
      params: z.object({ holdId: entityId }),
      headers: idempotencyHeaders,
      // $0 is allowed here: it closes a hold whose work cost nothing (as metering's own settles do), releasing all of it.
      body: z.object({ amountUsd: usd('amountUsd'), metadata }).strict(),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => created(201, await metrics.time('settle', () =>
        ledger.settle({ holdId: req.params.holdId, amount: req.body.amountUsd, metadata: { source: 'api', ...req.body.metadata }, idempotencyKey: key('settle'), actor: actorOf(req) }),
      )),
    { ledger: true }),
  );

  r.post('/v1/holds/:holdId/release', {
    config: { scope: 'write' },
    schema: { tags: ['holds'], summary: 'Release a hold', params: z.object({ holdId: entityId }), headers: idempotencyHeaders, body: z.object({}).strict().nullish() },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => ({
      body: await metrics.time('release', () => ledger.release({ holdId: req.params.holdId, idempotencyKey: key('release'), actor: actorOf(req) })),
    }), { ledger: true }),
  );
}
