import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger } from '../src/ledger/open';
import { createTopUpCheckout } from '../src/stripe/checkout';
import { linkStripeCustomer } from '../src/stripe/customers';
import { startWebhookServer } from '../src/stripe/webhooks';
import { runCli, runJson } from './support/cli-run';
import { sdk } from './support/stripe-fixture';
import { startStripeServer, type StripeTestServer } from './support/stripe-server';

/**
 * A customer's card payment becomes credit: `stripe checkout` (CLI and library)
 * creates a Checkout Session with the real `stripe` SDK against the loopback
 * Stripe server; the server "pays" it as the hosted page would, and its events
 * reach the real webhook endpoint over HTTP.
 */

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-checkout-'));
let server: StripeTestServer;
beforeAll(async () => {
  server = await startStripeServer();
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('stripe checkout', () => {
  it('CLI: the session carries the top-up metadata; paying it credits the customer exactly once', async () => {
    const db = path.join(tmp, 'cli.sqlite');
    const env = { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url };
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const r = await runJson(['--db', db, 'stripe', 'checkout', 'acme', '20', '--success-url', 'https://app.example/paid', '--key', 'co-1'], { env });
    expect(r.stderr).toBe('');
    expect(r.value).toMatchObject({ customerId: 'acme', amountCents: 2000, usd: '20.00', stripeCustomerId: null, metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' } });
    expect(r.value.url).toMatch(/^https:\/\//);
    const session = server.checkoutSessions.find((s) => s.id === r.value.sessionId)!;
    expect(session).toMatchObject({ mode: 'payment', amount_total: 2000, currency: 'usd', client_reference_id: 'acme', metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' } });
    // The same --key returns the same session (Stripe idempotency), not a second page.
    const again = await runJson(['--db', db, 'stripe', 'checkout', 'acme', '20', '--success-url', 'https://app.example/paid', '--key', 'co-1'], { env });
    expect(again.value.sessionId).toBe(r.value.sessionId);

    // Pay; deliver every event the payment produced (both name the same payment intent) twice each.
    const before = server.events.length;
    server.completeCheckoutSession(r.value.sessionId);
    const events = server.events.slice(before).filter((e) => ['checkout.session.completed', 'payment_intent.succeeded'].includes(e.type));
    expect(events.map((e) => e.type).sort()).toEqual(['checkout.session.completed', 'payment_intent.succeeded']);
    const ledger = await openLedger(db);
    const hooks = await startWebhookServer({ ledger, secret: server.webhookSecret }, { port: 0 });
    try {
      for (const e of [...events, ...events]) expect((await server.sendWebhook(hooks.url, e)).status).toBe(200);
      const balance = await ledger.balance('acme');
      expect(balance.balance).toBe(20_000_000_000n);
      const topups = (await ledger.statement('acme')).filter((e) => e.type === 'topup');
      expect(topups).toHaveLength(1);
      expect(topups[0]!.idempotencyKey).toBe(`stripe:pi:${server.checkoutSessions.find((s) => s.id === r.value.sessionId)!.payment_intent}`);
    } finally {
      await hooks.close();
      await ledger.close();
    }
  });

  it('the human output names the command that credits the payment, and that command exists', async () => {
    const db = path.join(tmp, 'hint.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const r = await runCli(['--db', db, 'stripe', 'checkout', 'acme', '20', '--success-url', 'https://app.example/paid'], { env: { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url } });
    expect(r.code, r.stderr).toBe(0);
    const hint = /Once paid, `flowise-billing ([^`]+)`/.exec(r.stdout)?.[1];
    expect(hint, r.stdout).toBe('webhooks serve');
    expect((await runCli([...hint!.split(' '), '--help'])).code).toBe(0);
  });

  it('refuses what Stripe or the ledger would: unknown customer, fractions of a cent, under $0.50, a non-https page; nothing reaches Stripe', async () => {
    const db = path.join(tmp, 'bad.sqlite');
    const env = { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url };
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const sessions = server.checkoutSessions.length;
    const cases: Array<[string[], string, RegExp]> = [
      [['ghost', '20'], 'CUSTOMER_NOT_FOUND', /ghost/],
      [['acme', '20.005'], 'VALIDATION_ERROR', /whole cents/],
      [['acme', '0.49'], 'VALIDATION_ERROR', /between \$0\.50/],
      [['acme', '-5'], 'VALIDATION_ERROR', /./],
    ];
    for (const [args, code, message] of cases) {
      const r = await runJson(['--db', db, 'stripe', 'checkout', ...args, '--success-url', 'https://app.example/paid'], { env });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.value.error.code, args.join(' ')).toBe(code);
      expect(r.value.error.message).toMatch(message);
    }
    const http = await runJson(['--db', db, 'stripe', 'checkout', 'acme', '5', '--success-url', 'http://app.example/paid'], { env });
    expect(http.value.error.message).toContain('successUrl must be https');
    expect(server.checkoutSessions.length).toBe(sessions);
  });

  it('doctor --online asks Stripe whether the key is accepted', async () => {
    const db = path.join(tmp, 'doctor.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const noFlowise = ['--db', db, 'doctor', '--online', '--flowise', path.join(tmp, 'no-flowise')];
    const good = await runJson(noFlowise, { env: { STRIPE_SECRET_KEY: server.secretKey, STRIPE_API_BASE: server.url } });
    expect(good.value.error.details.checks[2]).toEqual({ name: 'stripe key', status: 'ok', detail: 'test key, accepted by Stripe' });
    const bad = await runJson(noFlowise, { env: { STRIPE_SECRET_KEY: 'sk_test_revokedrevoked', STRIPE_API_BASE: server.url } });
    const problem = bad.value.error.details.problems.find((p: any) => p.code === 'STRIPE_AUTH_FAILED');
    expect(problem.fix).toContain('Stripe dashboard');
    expect(JSON.stringify(bad.value)).not.toContain('sk_test_revokedrevoked');
  });

  it('library: a linked Stripe customer is used, and a refused key is STRIPE_AUTH_FAILED', async () => {
    const ledger = await openLedger(path.join(tmp, 'lib.sqlite'));
    try {
      await ledger.createCustomer({ id: 'acme' });
      const stripe = sdk(server);
      const cus = await stripe.customers.create({ email: 'billing@acme.test' });
      await linkStripeCustomer(ledger, 'acme', cus.id);
      const c = await createTopUpCheckout(ledger, stripe, { customerId: 'acme', usd: '12.50', successUrl: 'http://localhost:3000/paid' });
      expect(c).toMatchObject({ stripeCustomerId: cus.id, amountCents: 1250, usd: '12.50' });
      expect(server.checkoutSessions.find((s) => s.id === c.sessionId)).toMatchObject({ customer: cus.id, amount_total: 1250 });
      const bad = new Stripe('sk_test_wrong', { ...server.sdkConfig, maxNetworkRetries: 0 });
      await expect(createTopUpCheckout(ledger, bad, { customerId: 'acme', usd: '5', successUrl: 'https://app.example/paid' })).rejects.toMatchObject({ code: 'STRIPE_AUTH_FAILED' });
    } finally {
      await ledger.close();
    }
  });
});
