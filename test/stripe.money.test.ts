import Stripe from 'stripe';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { QuotaService } from '../src/quota/service';
import { stripeReconcile, stripeSync } from '../src/stripe/cli';
import { stripeCustomerFor } from '../src/stripe/customers';
import { settlePaidPublicFlowRun, refundFlowCharge } from '../src/stripe/payouts';
import { AutoRecharge } from '../src/stripe/recharge';
import { startWebhookServer, type WebhookServer } from '../src/stripe/webhooks';
import { BACKENDS } from './support/backends';
import { openFor, outboxRows, stripeLedger } from './support/stripe-fixture';
import { signPayload, startStripeServer, type StripeEvent, type StripeTestServer } from './support/stripe-server';

const usd = parseUsd;

describe.each(BACKENDS)('stripe money in and out on $name', (backend) => {
  let server: StripeTestServer;
  let hooks: WebhookServer | null = null;
  const opened: SqlLedger[] = [];
  beforeEach(async () => {
    server = await startStripeServer();
  });
  afterEach(async () => {
    await hooks?.close();
    hooks = null;
    await Promise.all(opened.splice(0).map((l) => l.close().catch(() => undefined)));
    expect(server.internalErrors).toEqual([]);
    await server.close();
  });

  async function setup(fund = '5') {
    const s = await stripeLedger(backend, server, { customers: ['acme'], fund });
    opened.push(s.ledger);
    const quota = new QuotaService(s.ledger);
    hooks = await startWebhookServer({ ledger: s.ledger, secret: server.webhookSecret, quota, stripe: s.stripe });
    return { ...s, quota, cus: (await stripeCustomerFor(s.ledger, 'acme'))! };
  }
  const lastEvent = (type: string): StripeEvent => server.events.filter((e) => e.type === type).at(-1)!;
  const snapshot = async (ledger: SqlLedger) => ({
    balance: await ledger.balance('acme'),
    entries: (await ledger.statement('acme')).length,
    webhooks: (await ledger.dialect.read((c) => c.query('SELECT id FROM billing_stripe_webhook_events'))).length,
  });

  describe('webhooks', () => {
    it('a valid top-up event delivered three times credits the ledger once', async () => {
      const { ledger, stripe, cus } = await setup();
      await stripe.paymentIntents.create({
        amount: 2000, currency: 'usd', customer: cus, payment_method: 'pm_card_visa', confirm: true,
        metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' },
      });
      const event = lastEvent('payment_intent.succeeded');
      const replies = [];
      for (let i = 0; i < 3; i++) replies.push(await server.sendWebhook(hooks!.url, event));
      expect(replies.map((r) => r.status)).toEqual([200, 200, 200]);
      expect(JSON.parse(replies[1]!.body)).toMatchObject({ duplicate: true });
      expect((await ledger.balance('acme')).balance).toBe(usd('25'));
      expect((await ledger.statement('acme')).filter((e) => e.type === 'topup')).toHaveLength(2); // seed + this one
    });

    it('a tampered body, a wrong secret and a too-old timestamp are each refused with 400 and change nothing', async () => {
      const { ledger, stripe, cus } = await setup();
      await stripe.paymentIntents.create({
        amount: 2000, currency: 'usd', customer: cus, payment_method: 'pm_card_visa', confirm: true,
        metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' },
      });
      const event = lastEvent('payment_intent.succeeded');
      const before = await snapshot(ledger);
      const payload = JSON.stringify(event, null, 2);
      const post = (body: string, signature: string) =>
        fetch(hooks!.url, { method: 'POST', headers: { 'Content-Type': 'application/json', 'Stripe-Signature': signature }, body });
      // Tampered: signed, then the amount changed.
      const tampered = await post(payload.replace('"amount": 2000', '"amount": 200000'), signPayload(payload, server.webhookSecret));
      const wrong = await post(payload, signPayload(payload, 'whsec_not_the_right_one'));
      const old = await post(payload, signPayload(payload, server.webhookSecret, Math.floor(Date.now() / 1000) - 301));
      const unsigned = await fetch(hooks!.url, { method: 'POST', body: payload });
      expect([tampered.status, wrong.status, old.status, unsigned.status]).toEqual([400, 400, 400, 400]);
      expect(await tampered.text()).toMatch(/signature/i);
      expect(await old.text()).toMatch(/tolerance|timestamp/i);
      expect(await snapshot(ledger)).toEqual(before);
      // The genuine delivery still works afterwards (nothing was recorded as seen by the refused ones).
      expect((await server.sendWebhook(hooks!.url, event)).status).toBe(200);
      expect((await ledger.balance('acme')).balance - before.balance.balance).toBe(usd('20'));
    });

    it('refused deliveries alone change nothing at all', async () => {
      const { ledger, stripe, cus } = await setup();
      await stripe.paymentIntents.create({ amount: 2000, currency: 'usd', customer: cus, payment_method: 'pm_card_visa', confirm: true, metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' } });
      const event = lastEvent('payment_intent.succeeded');
      const payload = JSON.stringify(event);
      const before = await snapshot(ledger);
      for (const sig of [signPayload(payload, 'whsec_wrong'), signPayload(payload, server.webhookSecret, Math.floor(Date.now() / 1000) - 3600)]) {
        const r = await fetch(hooks!.url, { method: 'POST', headers: { 'Stripe-Signature': sig }, body: payload });
        expect(r.status).toBe(400);
      }
      const r = await fetch(hooks!.url, { method: 'POST', headers: { 'Stripe-Signature': signPayload(payload, server.webhookSecret) }, body: payload.replace('acme', 'acmf') });
      expect(r.status).toBe(400);
      expect(await snapshot(ledger)).toEqual(before);
    });

    it('unknown events are acknowledged and ignored', async () => {
      const { ledger } = await setup();
      const before = await snapshot(ledger);
      const r = await server.sendWebhook(hooks!.url, { id: 'evt_unknown_1', object: 'event', type: 'radar.early_fraud_warning.created', data: { object: {} }, created: 1 });
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body)).toMatchObject({ received: true, ignored: true });
      expect((await snapshot(ledger)).balance).toEqual(before.balance);
    });

    it('Checkout top-up: checkout.session.completed and payment_intent.succeeded for one payment credit once', async () => {
      const { ledger, stripe, cus } = await setup();
      const session = await stripe.checkout.sessions.create({
        mode: 'payment', customer: cus, success_url: 'https://example.com/ok', metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' },
        line_items: [{ quantity: 1, price_data: { currency: 'usd', unit_amount: 1500, product_data: { name: 'Credits' } } }],
      });
      const completed = server.completeCheckoutSession(session.id);
      const succeeded = lastEvent('payment_intent.succeeded');
      for (const e of [completed, succeeded, completed]) expect((await server.sendWebhook(hooks!.url, e)).status).toBe(200);
      expect((await ledger.balance('acme')).balance).toBe(usd('20'));
    });

    it('refunding a top-up in Stripe reduces the ledger balance, once per refund', async () => {
      const { ledger, stripe, cus } = await setup('0.01');
      const pi = await stripe.paymentIntents.create({ amount: 5000, currency: 'usd', customer: cus, payment_method: 'pm_card_visa', confirm: true, metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' } });
      await server.sendWebhook(hooks!.url, lastEvent('payment_intent.succeeded'));
      expect((await ledger.balance('acme')).balance).toBe(usd('50.01'));
      await stripe.refunds.create({ payment_intent: pi.id, amount: 1000 });
      const first = lastEvent('charge.refunded');
      await server.sendWebhook(hooks!.url, first);
      await server.sendWebhook(hooks!.url, { ...first, id: 'evt_same_refund_other_delivery' });
      expect((await ledger.balance('acme')).balance).toBe(usd('40.01'));
      await stripe.refunds.create({ payment_intent: pi.id }); // the remaining $40
      await server.sendWebhook(hooks!.url, lastEvent('charge.refunded'));
      expect((await ledger.balance('acme')).balance).toBe(usd('0.01'));
      expect((await ledger.checkInvariants()).ok).toBe(true);
      // Debits of refunded top-ups are not usage: no meter events for them.
      expect(await outboxRows(ledger)).toEqual([]);
    });

    it('invoice paid / payment failed resume / suspend; subscription updated / deleted change the plan', async () => {
      const { quota, cus } = await setup();
      await quota.subscribe({ customerId: 'acme', planId: 'free' });
      const evt = (id: string, type: string, object: Record<string, unknown>) => ({ id, object: 'event', type, created: Math.floor(Date.now() / 1000), data: { object } });
      expect((await server.sendWebhook(hooks!.url, evt('evt_inv_1', 'invoice.payment_failed', { id: 'in_1', object: 'invoice', customer: cus }))).status).toBe(200);
      expect((await quota.getSubscription('acme'))!.status).toBe('suspended');
      await server.sendWebhook(hooks!.url, evt('evt_inv_2', 'invoice.paid', { id: 'in_1', object: 'invoice', customer: cus }));
      expect((await quota.getSubscription('acme'))!.status).toBe('active');
      await server.sendWebhook(hooks!.url, evt('evt_sub_1', 'customer.subscription.updated', { id: 'sub_1', object: 'subscription', customer: cus, status: 'active', metadata: { fb_plan_id: 'professional' } }));
      expect((await quota.getSubscription('acme'))!.planId).toBe('professional');
      await server.sendWebhook(hooks!.url, evt('evt_sub_2', 'customer.subscription.deleted', { id: 'sub_1', object: 'subscription', customer: cus, status: 'canceled', metadata: {} }));
      expect((await quota.getSubscription('acme'))!.cancelAtPeriodEnd).toBe(true);
    });
  });

  describe('auto-recharge', () => {
    it('concurrent triggers from two processes’ ledgers start one PaymentIntent and credit once, even when the webhook also arrives', async () => {
      const { ledger, stripe, target } = await setup('1');
      // Two ledgers on one database, as two processes would have. (Two SQLite connections in one process would
      // block each other's event loop; there the second recharger shares the ledger, which still has its own claim path.)
      const other = backend.name === 'postgres' ? await openFor(backend, target) : ledger;
      if (other !== ledger) opened.push(other);
      await new AutoRecharge(ledger, stripe).configure({ customerId: 'acme', threshold: usd('5'), amountCents: 2500, paymentMethod: 'pm_card_visa' });
      const a = new AutoRecharge(ledger, stripe);
      const b = new AutoRecharge(other, new Stripe(server.secretKey, { ...server.sdkConfig, maxNetworkRetries: 0 }));
      const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).check('acme')));
      const statuses = outcomes.map((o) => o.status);
      expect(statuses.filter((s) => s === 'succeeded')).toHaveLength(1);
      expect(statuses.every((s) => ['succeeded', 'in_flight', 'not_needed'].includes(s))).toBe(true);
      expect(server.paymentIntents).toHaveLength(1);
      expect((await ledger.balance('acme')).balance).toBe(usd('26'));
      // The webhook for the same payment changes nothing.
      await server.sendWebhook(hooks!.url, lastEvent('payment_intent.succeeded'));
      expect((await ledger.balance('acme')).balance).toBe(usd('26'));
      expect((await a.check('acme')).status).toBe('not_needed');
      expect((await a.state('acme'))).toMatchObject({ inFlightKey: null, sequence: 1 });
    });

    it('a declined card is retried only within the window and at the interval; the webhook credits an answer the caller never saw', async () => {
      let now = Date.parse('2026-11-23T10:00:00Z');
      const { ledger, stripe, cus } = await setup('1');
      const r = new AutoRecharge(ledger, stripe, { clock: () => now });
      await r.configure({ customerId: 'acme', threshold: usd('5'), amountCents: 1000, paymentMethod: 'pm_card_visa', retryWindowMs: 3 * 3600_000, retryIntervalMs: 3600_000 });
      server.setPaymentOutcome(cus, 'card_declined');
      const first = await r.check('acme');
      expect(first).toMatchObject({ status: 'failed', key: 'fb-recharge:acme:0:0' });
      expect((await r.check('acme')).status).toBe('waiting_retry');
      now += 3600_000;
      expect(await r.check('acme')).toMatchObject({ status: 'failed', key: 'fb-recharge:acme:0:1' });
      now += 3 * 3600_000;
      expect((await r.check('acme')).status).toBe('gave_up');
      expect(server.paymentIntents).toHaveLength(2);
      expect((await ledger.balance('acme')).balance).toBe(usd('1'));

      // A manual top-up brings the balance back: the failure streak ends. Next time the card works,
      // but the answer is lost (connection reset after Stripe charged): the webhook credits it.
      await ledger.topUp({ customerId: 'acme', amount: usd('10'), idempotencyKey: 'manual' });
      expect((await r.check('acme')).status).toBe('not_needed');
      await ledger.charge({ customerId: 'acme', amount: usd('8'), idempotencyKey: 'spend' });
      server.setPaymentOutcome(cus, 'succeed');
      server.injectFaults({ kind: 'reset', count: 5, path: '/v1/payment_intents', afterProcessing: true });
      const lost = await r.check('acme');
      expect(lost).toMatchObject({ status: 'unknown', key: 'fb-recharge:acme:0:2' }); // a fresh key, not a replay of an old decline
      expect((await r.check('acme')).status).toBe('in_flight'); // never a second one while unknown
      server.clearFaults();
      const ev = lastEvent('payment_intent.succeeded');
      const delivered = await server.sendWebhook(hooks!.url, ev);
      expect(JSON.parse(delivered.body)).toMatchObject({ applied: { toppedUp: 'acme', usd: '10.00' } });
      expect((await ledger.balance('acme')).balance).toBe(usd('13'));
      expect(await r.state('acme')).toMatchObject({ inFlightKey: null, sequence: 1 });
      expect(server.paymentIntents).toHaveLength(3);
    });

    it('an orphaned claim is resumed with the same idempotency key, so Stripe replays instead of charging twice', async () => {
      let now = Date.now();
      const { ledger, stripe } = await setup('1');
      const r = new AutoRecharge(ledger, stripe, { clock: () => now, staleMs: 60_000 });
      await r.configure({ customerId: 'acme', threshold: usd('5'), amountCents: 1000, paymentMethod: 'pm_card_visa' });
      server.injectFaults({ kind: 'reset', count: 5, path: '/v1/payment_intents', afterProcessing: true });
      expect((await r.check('acme')).status).toBe('unknown');
      server.clearFaults();
      expect((await r.check('acme')).status).toBe('in_flight');
      now += 61_000; // no webhook came; the claim is stale
      expect(await r.check('acme')).toMatchObject({ status: 'succeeded', key: 'fb-recharge:acme:0:0' });
      expect(server.paymentIntents).toHaveLength(1);
      expect((await ledger.balance('acme')).balance).toBe(usd('11'));
    });
  });

  describe('refunds and paid public flows', () => {
    it('refunding a flow charge credits the ledger and sends a negative correcting meter event; reconcile zero', async () => {
      const { ledger, stripe } = await setup('10');
      const ch = await ledger.charge({ customerId: 'acme', amount: usd('0.08'), idempotencyKey: 'img', chargeType: 'ObjectGenerator', quantity: '4' });
      const { refund, meterEvent } = await refundFlowCharge(ledger, { chargeId: ch.id, amount: usd('0.02'), idempotencyKey: 'cli-refund-1' });
      expect(refund.amount).toBe(usd('0.02'));
      expect(meterEvent).toMatchObject({ value: '-20000', status: 'pending' });
      expect((await ledger.balance('acme')).balance).toBe(usd('9.94'));
      await stripeSync(ledger, { stripe });
      const values = server.meterEvents().map((e) => e.value);
      expect(values).toEqual(['80000', '-20000']);
      const report = await stripeReconcile(ledger, { stripe, period: '2000-01-01T00:00:00Z..2100-01-01T00:00:00Z' });
      expect(report.lines[0]).toMatchObject({ ledgerUnits: '60000', stripeUnits: '60000', difference: '0', ledgerUsd: '0.06' });
    });

    it('a $12 paid public run: fee $3.15, the creator nets $8.85 in the ledger, or by Connect transfer, once', async () => {
      const { ledger, stripe } = await setup('100');
      await ledger.createCustomer({ id: 'creator' });
      const viaLedger = await settlePaidPublicFlowRun(ledger, { runId: 'run-1', payerCustomerId: 'acme', creatorCustomerId: 'creator', price: usd('12') });
      expect(viaLedger).toMatchObject({ priceUsd: '12.00', feeUsd: '3.15', creatorNetUsd: '8.85', payout: { method: 'ledger', amountUsd: '8.85' } });
      await settlePaidPublicFlowRun(ledger, { runId: 'run-1', payerCustomerId: 'acme', creatorCustomerId: 'creator', price: usd('12') });
      expect((await ledger.balance('creator')).balance).toBe(usd('8.85'));
      expect((await ledger.balance('acme')).balance).toBe(usd('88'));

      const acct = server.addConnectedAccount();
      server.addBalance('usd', 100_000);
      const input = { runId: 'run-2', payerCustomerId: 'acme', creatorCustomerId: 'creator', price: usd('12'), creatorConnectAccount: acct, stripe };
      const viaConnect = await settlePaidPublicFlowRun(ledger, input);
      const again = await settlePaidPublicFlowRun(ledger, input);
      expect(viaConnect.payout).toMatchObject({ method: 'connect', amountCents: 885, keptByPlatformUsd: '0.00' });
      expect(again.payout).toEqual(viaConnect.payout);
      expect(server.transfers).toHaveLength(1);
      expect(server.transfers[0]).toMatchObject({ amount: 885, destination: acct, currency: 'usd' });
      expect((await ledger.balance('creator')).balance).toBe(usd('8.85'));
      expect((await ledger.balance('acme')).balance).toBe(usd('76'));
    });
  });
});
