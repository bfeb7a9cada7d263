import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { collectInvoices, collectionsOf } from '../../quota/collect';
import { stripeInvoiceItems } from '../../stripe/invoice-items';
import { planIdSchema, planSchema } from '../../quota/plans';
import { apiJson } from '../json';
import { actorOf, mutate, type ServerDeps } from '../context';
import { customerParams, idempotencyHeaders, usd } from '../schemas';

/** Plans, subscriptions, usage, budgets, alerts and invoices (the quota service). */
export function planRoutes(app: FastifyInstance, deps: ServerDeps): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { quota, ledger, metrics } = deps;

  r.get('/v1/plans', { config: { scope: 'read' }, schema: { tags: ['plans'], summary: 'All plans' } }, async () => ({
    data: (await metrics.time('listPlans', () => quota.listPlans())).map((p) => p.document),
  }));

  r.get('/v1/plans/:planId', { config: { scope: 'read' }, schema: { tags: ['plans'], summary: 'A plan', params: z.object({ planId: planIdSchema }) } }, async (req) =>
    (await metrics.time('getPlan', () => quota.getPlan(req.params.planId))).document,
  );

  r.post('/v1/plans', {
    config: { scope: 'admin' },
    schema: { tags: ['plans'], summary: 'Create a plan', headers: idempotencyHeaders, body: planSchema },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ status: 201, body: (await metrics.time('createPlan', () => quota.createPlan(req.body))).document })));

  r.patch('/v1/plans/:planId', {
    config: { scope: 'admin' },
    schema: { tags: ['plans'], summary: 'Change a plan (takes effect for new periods and admissions)', params: z.object({ planId: planIdSchema }), headers: idempotencyHeaders, body: planSchema.omit({ id: true }).partial().strict() },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ body: (await metrics.time('updatePlan', () => quota.updatePlan(req.params.planId, req.body))).document })));

  r.get('/v1/customers/:customerId/subscription', {
    config: { scope: 'read' },
    schema: { tags: ['subscriptions'], summary: "The customer's subscription (null when none)", params: customerParams },
  }, async (req) => {
    await ledger.getCustomer(req.params.customerId);
    return { subscription: await metrics.time('getSubscription', () => quota.getSubscription(req.params.customerId)) };
  });

  r.put('/v1/customers/:customerId/subscription', {
    config: { scope: 'write' },
    schema: {
      tags: ['subscriptions'],
      summary: 'Subscribe or change plan (upgrades now, downgrades at period end)',
      params: customerParams,
      headers: idempotencyHeaders,
      body: z.object({ planId: planIdSchema, anchorDay: z.number().int().min(1).max(31).optional() }).strict(),
    },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ body: await metrics.time('subscribe', () => quota.subscribe({ customerId: req.params.customerId, ...req.body })) })));

  r.delete('/v1/customers/:customerId/subscription', {
    config: { scope: 'write' },
    schema: { tags: ['subscriptions'], summary: 'Cancel at period end', params: customerParams, headers: idempotencyHeaders },
  }, (req, reply) => mutate(deps, req, reply, async () => ({ body: { subscription: await metrics.time('cancel', () => quota.cancel(req.params.customerId)) } })));

  r.get('/v1/customers/:customerId/usage', {
    config: { scope: 'read' },
    schema: { tags: ['usage'], summary: 'Usage report for the current period', params: customerParams },
  }, async (req) => apiJson(await metrics.time('usage', () => quota.usage(req.params.customerId))));

  r.get('/v1/customers/:customerId/budget', {
    config: { scope: 'read' },
    schema: { tags: ['budgets'], summary: 'Monthly budget and what the period used', params: customerParams },
  }, async (req) => apiJson(await metrics.time('budget', () => ledger.budget(req.params.customerId))));

  r.put('/v1/customers/:customerId/budget', {
    config: { scope: 'write' },
    schema: { tags: ['budgets'], summary: 'Set (or with null clear) the monthly budget', params: customerParams, headers: idempotencyHeaders, body: z.object({ limitUsd: usd('limitUsd').nullable() }).strict() },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      await metrics.time('setBudget', () => quota.setBudget(req.params.customerId, req.body.limitUsd));
      return { body: await ledger.budget(req.params.customerId) };
    }),
  );

  r.get('/v1/customers/:customerId/alerts', {
    config: { scope: 'read' },
    schema: { tags: ['alerts'], summary: 'Usage and budget alerts fired (all periods)', params: customerParams },
  }, async (req) => {
    await ledger.getCustomer(req.params.customerId);
    return { data: await metrics.time('alerts', () => quota.alerts(req.params.customerId)) };
  });

  r.get('/v1/customers/:customerId/invoices', {
    config: { scope: 'read' },
    schema: {
      tags: ['invoices'],
      summary: 'Closed invoices, each with how it is collected',
      description: '`collection` is null until the period is collected (close collects), then `{method: "credits"}` (an InvoiceCollection charge on the statement) or `{method: "stripe", items}` with each Stripe invoice item\'s `status` (pending, delivered, failed), attempts, last error and Stripe id.',
      params: customerParams,
    },
  }, async (req) => {
    const id = req.params.customerId;
    await ledger.getCustomer(id);
    const [invoices, collections] = await metrics.time('invoices', () => Promise.all([quota.invoices(id), collectionsOf(quota, id, stripeInvoiceItems())]));
    return apiJson({ data: invoices.map((inv) => ({ ...inv, collection: collections.get(inv.periodStart) ?? null })) });
  });

  r.get('/v1/customers/:customerId/invoices/preview', {
    config: { scope: 'read' },
    schema: { tags: ['invoices'], summary: 'The current period so far (records nothing)', params: customerParams },
  }, async (req) => apiJson(await metrics.time('previewInvoice', () => quota.previewInvoice(req.params.customerId))));

  r.post('/v1/customers/:customerId/invoices/close', {
    config: { scope: 'write' },
    schema: {
      tags: ['invoices'],
      summary: 'Close ended periods and collect them (credits, or Stripe invoice items)',
      description: 'Every ended period becomes an immutable invoice, collected once per customer and period. By default its base price and overage are charged to the credit balance (ChargeType InvoiceCollection on the statement); an invoice the credits do not cover is reported unpaid and collected on a later close. After `stripe setup --invoice-items`, periods are instead queued as Stripe invoice items (base and overage separately; status `invoiced` with each item\'s delivery status), delivered by `stripe sync`.',
      params: customerParams,
      headers: idempotencyHeaders,
      body: z.object({}).strict().nullish(),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      const invoice = await metrics.time('closeInvoice', () => quota.closeInvoice(req.params.customerId));
      const collections = await metrics.time('collectInvoices', () => collectInvoices(quota, req.params.customerId, actorOf(req), { external: stripeInvoiceItems() }));
      return { body: { invoice, collections } };
    }),
  );
}
