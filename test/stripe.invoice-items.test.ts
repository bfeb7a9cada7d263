import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseUsd } from '../src/money';
import { collectInvoices, collectionsOf, INVOICE_CHARGE_TYPE } from '../src/quota/collect';
import { QuotaService } from '../src/quota/service';
import Stripe from 'stripe';
import { stripeRetryFailed, stripeStatus, stripeSync } from '../src/stripe/cli';
import { linkStripeCustomer, stripeCustomerFor } from '../src/stripe/customers';
import { configureInvoiceItems, InvoiceItemDelivery, invoiceItemId, stripeInvoiceItems } from '../src/stripe/invoice-items';
import { BACKENDS } from './support/backends';
import { openFor, sdk } from './support/stripe-fixture';
import { createKey, startServe } from './support/serve';
import { startStripeServer, type StripeTestServer } from './support/stripe-server';

/**
 * Closing a period with Stripe invoice items turned on: the base price and the
 * overage become two Stripe invoice items, queued durably with the period's
 * collection claim and delivered by the sync worker with a stable
 * Idempotency-Key, so a crash between the queue write and the delivery, or a
 * lost answer, never makes a second item. Without it the credits path is as
 * before. The real `stripe` SDK against the loopback Stripe.
 */
describe.each(BACKENDS)('invoices collected as Stripe invoice items on $name', (backend) => {
  let server: StripeTestServer;
  const closers: Array<() => Promise<void>> = [];
  beforeEach(async () => {
    server = await startStripeServer();
  });
  afterEach(async () => {
    for (const c of closers.splice(0)) await c().catch(() => undefined);
    expect(server.internalErrors).toEqual([]);
    await server.close();
  });

  const DAY = 86_400_000;
  async function open(target: string, start: number) {
    let now = start;
    const clock = () => now;
    const ledger = await openFor(backend, target, { clock });
    closers.push(() => ledger.close());
    return { ledger, quota: new QuotaService(ledger, { clock }), clock, advance: (ms: number) => (now += ms) };
  }
  async function setup() {
    const t = await backend.freshTarget();
    const { ledger, quota, clock, advance } = await open(t, Date.parse('2026-03-10T12:00:00Z'));
    // Overage $0.5005 a unit: 4 units over → $2.002, not whole cents (sent as a decimal of cents).
    await quota.createPlan({ id: 'metered', name: 'Metered', basePriceUsd: '29', sessionsIncluded: 1000, managedModels: true, metrics: { Inference: { included: '10', overageUsd: '0.5005' } } });
    await ledger.createCustomer({ id: 'acme', name: 'Acme' });
    await ledger.topUp({ customerId: 'acme', amount: parseUsd('100'), idempotencyKey: 'pay-1' });
    await quota.subscribe({ customerId: 'acme', planId: 'metered' });
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.28'), chargeType: 'Inference', quantity: '14', idempotencyKey: 'run-1' });
    advance(40 * DAY);
    const inv = await quota.closeInvoice('acme');
    return { ledger, quota, inv, target: t, clock, advance };
  }
  const fast = { backoff: { baseMs: 1, capMs: 1 }, random: () => 1 };

  it('creates the base and overage items once, through a crash between the queue write and delivery and a lost answer', async () => {
    const first = await setup();
    await configureInvoiceItems(first.ledger, true);
    expect(first.inv.total).toBe(parseUsd('31.002'));
    const [a, b] = await Promise.all([
      collectInvoices(first.quota, 'acme', 'test', { external: stripeInvoiceItems() }),
      collectInvoices(first.quota, 'acme', 'test', { external: stripeInvoiceItems() }),
    ]);
    expect(a).toEqual(b);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ method: 'stripe', status: 'invoiced', chargeId: null, invoiceId: first.inv.id });
    expect(a[0]!.items!.map((i) => [i.kind, i.amount, i.status])).toEqual([
      ['base', parseUsd('29'), 'pending'],
      ['overage', parseUsd('2.002'), 'pending'],
    ]);
    // Not charged to the credits: the statement has no collection entry, the balance is untouched.
    expect((await first.ledger.balance('acme')).balance).toBe(parseUsd('100') - parseUsd('0.28'));
    expect((await first.ledger.statement('acme')).some((e) => e.chargeType === INVOICE_CHARGE_TYPE)).toBe(false);

    // The process that closed the period goes away before anything was sent; another one delivers.
    await first.ledger.close();
    closers.splice(0);
    const second = await open(first.target, first.clock());
    const stripe = sdk(server);
    // Stripe creates the overage item but the answer is lost, as in a crash right after sending.
    server.injectFaults({ kind: 'reset', path: '/v1/invoiceitems', method: 'POST', afterProcessing: true, count: 1, every: 2 });
    const delivery = new InvoiceItemDelivery(second.ledger, { stripe, ...fast, clock: second.clock });
    // Whoever resends it (the SDK on a reset connection, or the next round), it goes with the same key.
    let delivered = 0;
    for (let round = 0; round < 5; round++) {
      const r = await delivery.deliverRound();
      expect(r.failed).toBe(0);
      delivered += r.delivered;
      second.advance(10);
    }
    expect(delivered).toBe(2);
    expect(await delivery.deliverRound()).toMatchObject({ leased: 0 });

    // Exactly two items at Stripe, on the customer the sync created, with exact amounts.
    const stripeCustomer = await stripeCustomerFor(second.ledger, 'acme');
    expect(stripeCustomer).toMatch(/^cus_/);
    const items = server.invoiceItems;
    expect(items).toHaveLength(2);
    const byKind = new Map(items.map((i) => [i.metadata.flowise_billing_item, i]));
    expect(byKind.get('base')).toMatchObject({ customer: stripeCustomer, amount: 2900, currency: 'usd', metadata: { flowise_billing_customer_id: 'acme', flowise_billing_invoice_id: first.inv.id } });
    expect(byKind.get('overage')).toMatchObject({ customer: stripeCustomer, amount: 200, unit_amount_decimal: '200.2', quantity: 1 });
    expect(byKind.get('base')!.period).toEqual({ start: Date.parse(first.inv.periodStart) / 1000, end: Date.parse(first.inv.periodEnd) / 1000 - 1 });
    expect(byKind.get('base')!.description).toMatch(/^Plan metered: base price, /);
    // Every attempt carried the row's stable key; the resend was a replay.
    const posts = server.requests.filter((r) => r.method === 'POST' && r.path === '/v1/invoiceitems');
    const periodStart = Date.parse(first.inv.periodStart);
    expect(new Set(posts.map((r) => r.idempotencyKey))).toEqual(new Set([invoiceItemId('acme', periodStart, 'base'), invoiceItemId('acme', periodStart, 'overage')]));
    expect(posts).toHaveLength(3);
    const lost = posts.find((r) => r.fault === 'reset')!;
    expect(posts.filter((r) => r.replayed).map((r) => r.idempotencyKey)).toEqual([lost.idempotencyKey]);

    // Visible: the collection, the invoice record and the sync status say delivered, with Stripe's ids.
    const again = await collectInvoices(second.quota, 'acme', 'test', { external: stripeInvoiceItems() });
    expect(again[0]!.items!.map((i) => [i.kind, i.status, i.externalId])).toEqual([
      ['base', 'delivered', byKind.get('base')!.id],
      ['overage', 'delivered', byKind.get('overage')!.id],
    ]);
    const collections = await collectionsOf(second.quota, 'acme', stripeInvoiceItems());
    expect(collections.get(first.inv.periodStart)).toMatchObject({ method: 'stripe', items: [{ status: 'delivered' }, { status: 'delivered' }] });
    expect((await stripeStatus(second.ledger)).invoiceItems).toMatchObject({ pending: 0, delivered: 2, failed: 0 });
    // …and so does the invoice list of a running `serve` on the same database.
    const key = (await createKey(first.target, 'read')).token;
    const serve = await startServe(first.target);
    closers.push(() => serve.stop());
    const listed = (await (await fetch(`${serve.url}/v1/customers/acme/invoices`, { headers: { authorization: `Bearer ${key}` } })).json()) as { data: Array<Record<string, unknown>> };
    expect(listed.data).toHaveLength(1);
    expect(listed.data[0]!.collection).toEqual({
      method: 'stripe',
      items: [
        expect.objectContaining({ kind: 'base', amountUsd: '29.00', status: 'delivered', externalId: byKind.get('base')!.id }),
        expect.objectContaining({ kind: 'overage', amountUsd: '2.002', status: 'delivered', externalId: byKind.get('overage')!.id }),
      ],
    });

    // Turning Stripe invoice items off later never collects this period a second time from the credits.
    await configureInvoiceItems(second.ledger, false);
    expect((await collectInvoices(second.quota, 'acme', 'test', { external: stripeInvoiceItems() }))[0]).toMatchObject({ method: 'stripe', status: 'invoiced' });
    expect((await second.ledger.statement('acme')).some((e) => e.chargeType === INVOICE_CHARGE_TYPE)).toBe(false);
    expect(server.invoiceItems).toHaveLength(2);
    expect((await second.ledger.checkInvariants()).ok).toBe(true);
  });

  it('retries a server failure with the same key, marks an item Stripe refuses failed (visible), and requeues it', async () => {
    const { ledger, quota, clock, advance } = await setup();
    await configureInvoiceItems(ledger, true);
    // Linked to a Stripe customer that does not exist: Stripe refuses the item (400), retrying cannot help.
    await linkStripeCustomer(ledger, 'acme', 'cus_gone');
    await collectInvoices(quota, 'acme', 'test', { external: stripeInvoiceItems() });
    const stripe = sdk(server);
    server.injectFaults({ kind: 'server_error', path: '/v1/invoiceitems', count: 2, saved: false });
    const delivery = new InvoiceItemDelivery(ledger, { stripe, ...fast, clock });
    expect(await delivery.deliverRound()).toMatchObject({ leased: 2, retried: 2 });
    advance(10);
    expect(await delivery.deliverRound()).toMatchObject({ leased: 2, failed: 2 });
    // The retry went with the same keys as the first attempts.
    const keys = server.requests.filter((r) => r.path === '/v1/invoiceitems').map((r) => r.idempotencyKey);
    expect(keys).toHaveLength(4);
    expect(new Set(keys).size).toBe(2);
    const status = (await stripeStatus(ledger)).invoiceItems;
    expect(status).toMatchObject({ pending: 0, delivered: 0, failed: 2 });
    expect(status.lastErrors[0]!.error).toMatch(/No such customer: 'cus_gone'/);
    const [c] = await collectInvoices(quota, 'acme', 'test', { external: stripeInvoiceItems() });
    expect(c!.items!.map((i) => [i.status, i.attempts])).toEqual([['failed', 2], ['failed', 2]]);
    expect(server.invoiceItems).toHaveLength(0);
    expect(await stripeRetryFailed(ledger)).toMatchObject({ invoiceItemsRequeued: 2 });
    expect((await stripeStatus(ledger)).invoiceItems).toMatchObject({ pending: 2, failed: 0 });
  });

  it('fails an item at once when Stripe saved a 500 under its key (a resend would only replay it), with that advice', async () => {
    const { ledger, quota, clock } = await setup();
    await configureInvoiceItems(ledger, true);
    await collectInvoices(quota, 'acme', 'test', { external: stripeInvoiceItems() });
    server.injectFaults({ kind: 'server_error', path: '/v1/invoiceitems', count: 1 });
    const r = await new InvoiceItemDelivery(ledger, { stripe: sdk(server), ...fast, clock }).deliverRound();
    expect(r).toMatchObject({ leased: 2, delivered: 1, failed: 1, retried: 0 });
    const status = (await stripeStatus(ledger)).invoiceItems;
    expect(status).toMatchObject({ delivered: 1, failed: 1 });
    expect(status.lastErrors[0]!.error).toMatch(/replays it for 24 h; requeue it/);
    expect(server.invoiceItems).toHaveLength(1);
  });

  it('stripe sync delivers invoice items; a refused API key stops it with STRIPE_AUTH_FAILED and leaves them due at once', async () => {
    const { ledger, quota } = await setup();
    await configureInvoiceItems(ledger, true);
    await collectInvoices(quota, 'acme', 'test', { external: stripeInvoiceItems() });
    const wrong = new Stripe('sk_test_wrong', { ...server.sdkConfig, maxNetworkRetries: 0 });
    await expect(stripeSync(ledger, { stripe: wrong, watch: true })).rejects.toMatchObject({ code: 'STRIPE_AUTH_FAILED' });
    expect((await stripeStatus(ledger)).invoiceItems).toMatchObject({ pending: 2, delivered: 0, failed: 0 });
    const done = await stripeSync(ledger, { stripe: sdk(server) });
    expect(done.invoiceItems).toMatchObject({ pending: 0, delivered: 2, failed: 0 });
    expect(server.invoiceItems).toHaveLength(2);
  });

  it('without Stripe invoice items the credits path is unchanged, and turning them on later does not collect that period again', async () => {
    const { ledger, quota } = await setup();
    const [c] = await collectInvoices(quota, 'acme', 'test', { external: stripeInvoiceItems() });
    expect(c).toMatchObject({ method: 'credits', status: 'collected' });
    expect(c!.items).toBeUndefined();
    const collected = (await ledger.statement('acme')).filter((e) => e.chargeType === INVOICE_CHARGE_TYPE);
    expect(collected.map((e) => e.amount)).toEqual([-parseUsd('31.002')]);
    await configureInvoiceItems(ledger, true);
    const [again] = await collectInvoices(quota, 'acme', 'test', { external: stripeInvoiceItems() });
    expect(again).toMatchObject({ method: 'credits', status: 'collected', chargeId: c!.chargeId });
    const rows = await ledger.dialect.read((x) => x.query('SELECT COUNT(*) AS n FROM billing_stripe_invoice_items'));
    expect(Number(rows[0]!.n)).toBe(0);
    expect(await new InvoiceItemDelivery(ledger, { stripe: sdk(server) }).deliverRound()).toMatchObject({ leased: 0 });
    expect(server.invoiceItems).toHaveLength(0);
    expect((await collectionsOf(quota, 'acme')).get(c!.periodStart)).toEqual({ method: 'credits' });
  });
});
