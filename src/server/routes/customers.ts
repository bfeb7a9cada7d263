import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { apiJson } from '../json';
import { actorOf, mutate, type ServerDeps } from '../context';
import { customerNameSchema } from '../../schemas';
import { customerId, customerParams, idempotencyHeaders, positiveUsd, queryInt, usd } from '../schemas';
import { planIdSchema } from '../../quota/plans';

const tags = ['customers'];

/** Customers, their balance, statement and top-ups. */
export function customerRoutes(app: FastifyInstance, deps: ServerDeps): void {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const { ledger, quota, metrics } = deps;

  r.post('/v1/customers', {
    config: { scope: 'write' },
    schema: { tags, summary: 'Create a customer', headers: idempotencyHeaders, body: z.object({ id: customerId, name: customerNameSchema.optional() }).strict() },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => ({
      status: 201,
      body: await metrics.time('createCustomer', () => ledger.createCustomer({ id: req.body.id, name: req.body.name, idempotencyKey: key('customer'), actor: actorOf(req) })),
    })),
  );

  r.get('/v1/customers', {
    config: { scope: 'read' },
    schema: {
      tags,
      summary: 'List customers (by id, paged with `after`)',
      description: 'Keyset paging: each page is one range read in id order. Pass the previous page\'s `nextAfter` as `after`; `nextAfter` is null on the last page. A customer created while paging shows on a later page when its id sorts after the cursor, and no customer is shown twice.',
      querystring: z.object({ limit: queryInt(1, 500).default(50), after: customerId.optional() }).strict(),
    },
  }, async (req) => {
    // One keyset page from the database (one row more than asked, to know whether another page follows).
    const page = await metrics.time('listCustomers', () => ledger.listCustomers({ limit: req.query.limit + 1, after: req.query.after }));
    const slice = page.slice(0, req.query.limit);
    const data = await Promise.all(slice.map(async (c) => ({ ...c, ...(await ledger.balance(c.id)) })));
    const next = page.length > req.query.limit ? slice[slice.length - 1]!.id : null;
    return apiJson({ data, nextAfter: next });
  });

  r.get('/v1/customers/:customerId', {
    config: { scope: 'read' },
    schema: { tags, summary: 'A customer with balance, subscription and budget', params: customerParams },
  }, async (req) => {
    const id = req.params.customerId;
    const c = await metrics.time('getCustomer', () => ledger.getCustomer(id));
    const [balance, subscription, budget] = await Promise.all([ledger.balance(id), quota.getSubscription(id), ledger.budget(id)]);
    return apiJson({ ...c, ...balance, subscription, budget });
  });

  r.patch('/v1/customers/:customerId', {
    config: { scope: 'write' },
    schema: {
      tags,
      summary: 'Update a customer: display name, plan, monthly budget, low-balance threshold',
      description: 'The id is immutable. `name: null` clears the display name, `budgetUsd: null` clears the budget, `lowBalanceThresholdUsd: null` returns to the default. Setting a value the customer already has changes nothing.',
      params: customerParams,
      headers: idempotencyHeaders,
      body: z
        .object({
          name: customerNameSchema.nullable().optional(),
          planId: planIdSchema.optional(),
          budgetUsd: usd('budgetUsd').nullable().optional(),
          lowBalanceThresholdUsd: usd('lowBalanceThresholdUsd').nullable().optional(),
        })
        .strict()
        .refine((b) => Object.keys(b).length > 0, 'give at least one of name, planId, budgetUsd, lowBalanceThresholdUsd'),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async () => {
      const id = req.params.customerId;
      await ledger.getCustomer(id);
      // Checked before anything changes, so a bad plan id leaves the budget untouched too.
      if (req.body.planId !== undefined) await quota.getPlan(req.body.planId);
      if (req.body.name !== undefined) await metrics.time('updateCustomer', () => ledger.updateCustomer({ id, name: req.body.name!, actor: actorOf(req) }));
      if (req.body.planId !== undefined) await metrics.time('subscribe', () => quota.subscribe({ customerId: id, planId: req.body.planId! }));
      if (req.body.budgetUsd !== undefined) await metrics.time('setBudget', () => quota.setBudget(id, req.body.budgetUsd!));
      if (req.body.lowBalanceThresholdUsd !== undefined) await deps.webhooks.setLowBalanceThreshold(id, req.body.lowBalanceThresholdUsd);
      const [c, balance, subscription, budget] = await Promise.all([ledger.getCustomer(id), ledger.balance(id), quota.getSubscription(id), ledger.budget(id)]);
      return { body: { ...c, ...balance, subscription, budget } };
    }),
  );

  r.get('/v1/customers/:customerId/balance', {
    config: { scope: 'read' },
    schema: { tags, summary: 'Posted balance, open holds, available', params: customerParams },
  }, async (req) => apiJson(await metrics.time('balance', () => ledger.balance(req.params.customerId))));

  r.get('/v1/customers/:customerId/statement', {
    config: { scope: 'read' },
    schema: {
      tags,
      summary: 'Journal entries in order, paged by sequence number',
      params: customerParams,
      querystring: z.object({ limit: queryInt(1, 1000).default(100), afterSeq: queryInt(0).default(0) }).strict(),
    },
  }, async (req) => {
    const entries = await metrics.time('statement', () => ledger.statement(req.params.customerId, { limit: req.query.limit, afterSeq: req.query.afterSeq }));
    const next = entries.length === req.query.limit ? entries[entries.length - 1]!.seq : null;
    return apiJson({ data: entries, nextAfterSeq: next });
  });

  r.post('/v1/customers/:customerId/topups', {
    config: { scope: 'write' },
    schema: {
      tags,
      summary: 'Add credits (e.g. after a payment succeeded)',
      params: customerParams,
      headers: idempotencyHeaders,
      body: z.object({ amountUsd: positiveUsd('amountUsd'), memo: z.string().max(500).optional() }).strict(),
    },
  }, (req, reply) =>
    mutate(deps, req, reply, async (key) => {
      const t = await metrics.time('topUp', () =>
        ledger.topUp({ customerId: req.params.customerId, amount: req.body.amountUsd, memo: req.body.memo, idempotencyKey: key('topup'), actor: actorOf(req) }),
      );
      return { status: 201, body: t, createdAt: t.createdAt };
    }, { ledger: true }),
  );
}
