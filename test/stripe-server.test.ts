import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signPayload, startStripeServer, type StripeTestServer } from './support/stripe-server';

let server: StripeTestServer;
let stripe: Stripe;

function client(config: Stripe.StripeConfig = {}, key = server.secretKey): Stripe {
  return new Stripe(key, { ...server.sdkConfig, maxNetworkRetries: 0, ...config });
}

async function rejectionOf(promise: Promise<unknown>): Promise<Stripe.errors.StripeError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof Stripe.errors.StripeError) return err;
    throw err;
  }
  throw new Error('expected the call to be rejected');
}

function requestsSince(mark: number, path?: string): StripeTestServer['requests'] {
  return server.requests.slice(mark).filter((r) => path === undefined || r.path === path);
}

const nowSeconds = (): number => Math.floor(Date.now() / 1000);

beforeAll(async () => {
  server = await startStripeServer();
  stripe = client();
});

afterAll(async () => {
  await server.close();
});

afterEach(() => {
  server.clearFaults();
  expect(server.internalErrors).toEqual([]);
});

describe('authentication', () => {
  it('rejects a wrong secret key with 401 and a redacted key in the message', async () => {
    const err = await rejectionOf(client({}, 'sk_test_wrongwrongwrong1234').customers.create());
    expect(err).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(err.statusCode).toBe(401);
    expect(err.rawType).toBe('invalid_request_error');
    expect(err.message).toBe('Invalid API Key provided: sk_test_***************1234');
  });

  it('rejects a request without credentials', async () => {
    const res = await fetch(`${server.url}/v1/customers`);
    expect(res.status).toBe(401);
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe('invalid_request_error');
    expect(body.error.message).toMatch(/^You did not provide an API key/);
  });
});

describe('request validation', () => {
  it('reports the first missing required param', async () => {
    const err = await rejectionOf(
      stripe.paymentIntents.create({ currency: 'usd' } as Stripe.PaymentIntentCreateParams),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err).toMatchObject({
      statusCode: 400,
      code: 'parameter_missing',
      param: 'amount',
      message: 'Missing required param: amount.',
    });
  });

  it('reports missing nested params in bracket notation', async () => {
    const customer = await stripe.customers.create();
    const err = await rejectionOf(
      stripe.billing.meterEvents.create({
        event_name: 'validation_tokens',
        payload: { stripe_customer_id: customer.id },
      }),
    );
    expect(err).toMatchObject({ code: 'parameter_missing', param: 'payload[value]' });
  });

  it('refuses unknown params, as Stripe does', async () => {
    const err = await rejectionOf(
      stripe.customers.create({ emial: 'a@example.com' } as Stripe.CustomerCreateParams),
    );
    expect(err).toMatchObject({ code: 'parameter_unknown', param: 'emial' });
  });

  it('refuses POST bodies that are not form-encoded', async () => {
    const res = await fetch(`${server.url}/v1/customers`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.secretKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: 'json@example.com' }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/x-www-form-urlencoded/);
  });

  it('parses bracket notation into nested params', async () => {
    const customer = await stripe.customers.create({
      email: 'brackets@example.com',
      metadata: { tenant: 't-1', plan: 'starter' },
      expand: ['invoice_settings.default_payment_method'],
    });
    expect(customer.metadata).toEqual({ tenant: 't-1', plan: 'starter' });
    const recorded = server.requests.at(-1);
    expect(recorded?.rawBody).toContain('metadata[tenant]=t-1');
    expect(recorded?.params).toEqual({
      email: 'brackets@example.com',
      metadata: { tenant: 't-1', plan: 'starter' },
      expand: { 0: 'invoice_settings.default_payment_method' },
    });
  });

  it('answers unknown routes with 404 in Stripe’s error shape', async () => {
    const err = await rejectionOf(stripe.rawRequest('GET', '/v1/not_a_thing'));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(404);
    expect(err.message).toMatch(/^Unrecognized request URL \(GET: \/v1\/not_a_thing\)/);
  });

  it('answers 404 resource_missing for unknown ids', async () => {
    const err = await rejectionOf(stripe.customers.retrieve('cus_missing'));
    expect(err).toMatchObject({ statusCode: 404, code: 'resource_missing', message: "No such customer: 'cus_missing'" });
  });
});

describe('idempotency', () => {
  it('replays the stored response for the same key and params', async () => {
    const first = await stripe.customers.create({ email: 'idem@example.com' }, { idempotencyKey: 'idem-replay-1' });
    const second = await stripe.customers.create({ email: 'idem@example.com' }, { idempotencyKey: 'idem-replay-1' });
    expect(second.id).toBe(first.id);
    expect(second.lastResponse.headers['idempotent-replayed']).toBe('true');
    expect(first.lastResponse.headers['idempotent-replayed']).toBeUndefined();
    expect(server.customers.filter((c) => c.email === 'idem@example.com')).toHaveLength(1);
    expect(server.idempotencyKeys()).toContain('idem-replay-1');
  });

  it('refuses the same key with different params', async () => {
    await stripe.customers.create({ email: 'a@example.com' }, { idempotencyKey: 'idem-conflict-1' });
    const err = await rejectionOf(
      stripe.customers.create({ email: 'b@example.com' }, { idempotencyKey: 'idem-conflict-1' }),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(err.statusCode).toBe(400);
    expect(err.rawType).toBe('idempotency_error');
    expect(err.message).toMatch(/can only be used with the same parameters/);
  });

  it('refuses the same key on another endpoint', async () => {
    const customer = await stripe.customers.create({}, { idempotencyKey: 'idem-endpoint-1' });
    const err = await rejectionOf(
      stripe.customers.update(customer.id, { name: 'x' }, { idempotencyKey: 'idem-endpoint-1' }),
    );
    expect(err.rawType).toBe('idempotency_error');
  });

  it('does not save results of requests that failed validation', async () => {
    const bad = { currency: 'usd' } as Stripe.PaymentIntentCreateParams;
    await rejectionOf(stripe.paymentIntents.create(bad, { idempotencyKey: 'idem-invalid-1' }));
    expect(server.idempotencyKeys()).not.toContain('idem-invalid-1');
  });

  it('replays a card decline instead of charging again', async () => {
    const customer = await stripe.customers.create();
    server.setPaymentOutcome(customer.id, 'card_declined');
    const params: Stripe.PaymentIntentCreateParams = {
      amount: 2000, currency: 'usd', customer: customer.id, payment_method: 'pm_card_visa', confirm: true, off_session: true,
    };
    const first = await rejectionOf(stripe.paymentIntents.create(params, { idempotencyKey: 'idem-decline-1' }));
    const second = await rejectionOf(stripe.paymentIntents.create(params, { idempotencyKey: 'idem-decline-1' }));
    expect(second.payment_intent?.id).toBe(first.payment_intent?.id);
    expect(server.paymentIntents.filter((pi) => pi.customer === customer.id)).toHaveLength(1);
  });
});

describe('billing meter events', () => {
  let customerId: string;
  let meterId: string;

  beforeAll(async () => {
    customerId = (await stripe.customers.create({ email: 'meter@example.com' })).id;
    meterId = (
      await stripe.billing.meters.create({
        display_name: 'AI tokens',
        event_name: 'ai_tokens',
        default_aggregation: { formula: 'sum' },
      })
    ).id;
  });

  it('records an event with its parsed payload', async () => {
    const event = await stripe.billing.meterEvents.create({
      event_name: 'ai_tokens',
      payload: { stripe_customer_id: customerId, value: '3' },
      identifier: 'record-1',
    });
    expect(event).toMatchObject({ object: 'billing.meter_event', identifier: 'record-1' });
    expect(server.meterEvents().find((e) => e.identifier === 'record-1')).toMatchObject({
      meter: meterId, customer: customerId, value: '3',
    });
  });

  it('rejects a duplicate identifier the way Stripe does, without SDK retries', async () => {
    const retrying = client({ maxNetworkRetries: 2 });
    const payload = { stripe_customer_id: customerId, value: '1' };
    await retrying.billing.meterEvents.create({ event_name: 'ai_tokens', payload, identifier: 'dup-1' });
    const mark = server.requests.length;
    const err = await rejectionOf(
      retrying.billing.meterEvents.create({ event_name: 'ai_tokens', payload, identifier: 'dup-1' }),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err.statusCode).toBe(400);
    expect(err.rawType).toBe('invalid_request_error');
    expect(err.message).toBe('An event already exists with identifier dup-1.');
    // Live responses carry no `code` for this; callers must match the message.
    expect(err.code).toBeUndefined();
    expect(err.headers?.['stripe-should-retry']).toBe('false');
    expect(requestsSince(mark)).toHaveLength(1);
    expect(server.meterEvents().filter((e) => e.identifier === 'dup-1')).toHaveLength(1);
  });

  it('allows an identifier again after 24 hours', async () => {
    let now = Date.now();
    const clocked = await startStripeServer({ now: () => now });
    try {
      const sdk = new Stripe(clocked.secretKey, { ...clocked.sdkConfig, maxNetworkRetries: 0 });
      const customer = await sdk.customers.create();
      const params = { event_name: 'e', payload: { stripe_customer_id: customer.id, value: '1' }, identifier: 'id-24h' };
      await sdk.billing.meterEvents.create(params);
      now += 23 * 3_600_000;
      await expect(sdk.billing.meterEvents.create(params)).rejects.toThrow(/already exists/);
      now += 2 * 3_600_000;
      await expect(sdk.billing.meterEvents.create(params)).resolves.toMatchObject({ identifier: 'id-24h' });
    } finally {
      await clocked.close();
    }
  });

  it('enforces the 35-day past and 5-minute future timestamp window', async () => {
    const send = (timestamp: number) =>
      stripe.billing.meterEvents.create({
        event_name: 'ai_tokens', payload: { stripe_customer_id: customerId, value: '1' }, timestamp,
      });
    const day = 86_400;
    expect(await rejectionOf(send(nowSeconds() - 36 * day))).toMatchObject({ statusCode: 400, param: 'timestamp' });
    expect(await rejectionOf(send(nowSeconds() + 6 * 60))).toMatchObject({ statusCode: 400, param: 'timestamp' });
    await expect(send(nowSeconds() - 34 * day)).resolves.toBeDefined();
    await expect(send(nowSeconds() + 4 * 60)).resolves.toBeDefined();
  });

  it('accepts only whole-number values of at most 15 digits', async () => {
    const send = (value: string) =>
      stripe.billing.meterEvents.create({ event_name: 'ai_tokens', payload: { stripe_customer_id: customerId, value } });
    expect(await rejectionOf(send('2.5'))).toMatchObject({ param: 'payload[value]' });
    expect(await rejectionOf(send('abc'))).toMatchObject({ param: 'payload[value]' });
    expect(await rejectionOf(send('1234567890123456'))).toMatchObject({ param: 'payload[value]' });
    await expect(send('-2')).resolves.toBeDefined();
    await expect(send('123456789012345')).resolves.toBeDefined();
  });

  it('rejects events for unknown customers', async () => {
    const err = await rejectionOf(
      stripe.billing.meterEvents.create({ event_name: 'ai_tokens', payload: { stripe_customer_id: 'cus_nobody', value: '1' } }),
    );
    expect(err).toMatchObject({ code: 'resource_missing', param: 'payload[stripe_customer_id]' });
  });

  it('uses the meter’s payload keys', async () => {
    await stripe.billing.meters.create({
      display_name: 'Bytes',
      event_name: 'bytes_stored',
      default_aggregation: { formula: 'sum' },
      customer_mapping: { event_payload_key: 'account', type: 'by_id' },
      value_settings: { event_payload_key: 'bytes' },
    });
    const err = await rejectionOf(
      stripe.billing.meterEvents.create({ event_name: 'bytes_stored', payload: { stripe_customer_id: customerId, value: '1' } }),
    );
    expect(err).toMatchObject({ code: 'parameter_missing', param: 'payload[account]' });
    await expect(
      stripe.billing.meterEvents.create({ event_name: 'bytes_stored', payload: { account: customerId, bytes: '10' } }),
    ).resolves.toBeDefined();
  });
});

describe('meter event summaries', () => {
  it('sums a customer’s events within [start_time, end_time)', async () => {
    const meter = await stripe.billing.meters.create({
      display_name: 'Sparks', event_name: 'sparks', default_aggregation: { formula: 'sum' },
    });
    const alice = (await stripe.customers.create()).id;
    const bob = (await stripe.customers.create()).id;
    const hour = 3600;
    const end = nowSeconds() - (nowSeconds() % hour);
    const start = end - 2 * hour;
    const send = (customer: string, value: string, timestamp: number) =>
      stripe.billing.meterEvents.create({ event_name: 'sparks', payload: { stripe_customer_id: customer, value }, timestamp });
    await send(alice, '3', start);
    await send(alice, '4', start + 10);
    await send(alice, '5', start + hour + 5);
    await send(alice, '100', end); // end_time is exclusive
    await send(alice, '100', start - 1);
    await send(bob, '7', start + 20);

    const total = await stripe.billing.meters.listEventSummaries(meter.id, { customer: alice, start_time: start, end_time: end });
    expect(total.data).toHaveLength(1);
    expect(total.data[0]).toMatchObject({
      object: 'billing.meter_event_summary', aggregated_value: 12, start_time: start, end_time: end, meter: meter.id,
    });

    const hourly = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer: alice, start_time: start, end_time: end, value_grouping_window: 'hour',
    });
    expect(hourly.data.map((s) => [s.start_time, s.aggregated_value])).toEqual([
      [start + hour, 5],
      [start, 7],
    ]);
  });

  it('ignores events sent before their meter existed', async () => {
    const customer = (await stripe.customers.create()).id;
    const event = await stripe.billing.meterEvents.create({
      event_name: 'late_meter', payload: { stripe_customer_id: customer, value: '9' },
    });
    const meter = await stripe.billing.meters.create({
      display_name: 'Late', event_name: 'late_meter', default_aggregation: { formula: 'sum' },
    });
    const end = event.timestamp - (event.timestamp % 60) + 60;
    const summary = await stripe.billing.meters.listEventSummaries(meter.id, {
      customer, start_time: end - 3600, end_time: end,
    });
    expect(summary.data[0]?.aggregated_value).toBe(0);
  });

  it('requires customer, start_time and end_time', async () => {
    const meter = (await stripe.billing.meters.list()).data[0];
    const err = await rejectionOf(
      stripe.billing.meters.listEventSummaries(meter?.id ?? '', { start_time: 0, end_time: 60 } as Stripe.Billing.MeterListEventSummariesParams),
    );
    expect(err).toMatchObject({ code: 'parameter_missing', param: 'customer' });
  });
});

describe('fault injection', () => {
  it('answers 429 rate_limit once, which the SDK does not retry, then recovers', async () => {
    const retrying = client({ maxNetworkRetries: 2 });
    server.injectFaults({ kind: 'rate_limit' });
    const mark = server.requests.length;
    const err = await rejectionOf(retrying.customers.create());
    expect(err).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
    expect(err).toMatchObject({ statusCode: 429, code: 'rate_limit', rawType: 'invalid_request_error' });
    expect(requestsSince(mark)).toHaveLength(1);
    await expect(retrying.customers.create()).resolves.toMatchObject({ object: 'customer' });
  });

  it('lets the SDK retry lock timeouts and unsaved server errors with the same idempotency key', async () => {
    const retrying = client({ maxNetworkRetries: 3 });
    server.injectFaults({ kind: 'lock_timeout', path: '/v1/customers' });
    // A 500 from in front of the API (the endpoint never ran): nothing is saved under the key.
    server.injectFaults({ kind: 'server_error', path: '/v1/customers', saved: false });
    const mark = server.requests.length;
    const customer = await retrying.customers.create({ email: 'retry@example.com' });
    const attempts = requestsSince(mark, '/v1/customers');
    expect(attempts.map((r) => r.status)).toEqual([429, 500, 200]);
    expect(new Set(attempts.map((r) => r.idempotencyKey)).size).toBe(1);
    expect(server.customers.filter((c) => c.email === 'retry@example.com').map((c) => c.id)).toEqual([customer.id]);
  });

  it('saves a 500 under its idempotency key and replays it for that key (Stripe-Should-Retry: false), so the SDK stops', async () => {
    const retrying = client({ maxNetworkRetries: 3 });
    server.injectFaults({ kind: 'server_error', path: '/v1/customers' });
    const mark = server.requests.length;
    const err = await rejectionOf(retrying.customers.create({ email: 'saved500@example.com' }, { idempotencyKey: 'k-saved-500' }));
    expect(err).toMatchObject({ statusCode: 500 });
    expect(requestsSince(mark, '/v1/customers')).toHaveLength(1); // the SDK obeyed Stripe-Should-Retry: false
    const again = await rejectionOf(stripe.customers.create({ email: 'saved500@example.com' }, { idempotencyKey: 'k-saved-500' }));
    expect(again).toMatchObject({ statusCode: 500 });
    expect(requestsSince(mark, '/v1/customers').map((r) => r.replayed)).toEqual([false, true]);
    expect(server.customers.filter((c) => c.email === 'saved500@example.com')).toEqual([]);
    // A fresh key runs the request.
    await expect(stripe.customers.create({ email: 'saved500@example.com' }, { idempotencyKey: 'k-fresh' })).resolves.toMatchObject({ object: 'customer' });
  });

  it('one concurrent meter-event call per customer and meter: the second gets 429 (not saved), other customers go through', async () => {
    const slow = await startStripeServer({ meterEventLatencyMs: 40 });
    try {
      const s = new Stripe(slow.secretKey, { ...slow.sdkConfig, maxNetworkRetries: 0 });
      const [a, b] = [await s.customers.create(), await s.customers.create()];
      const send = (customer: string, id: string, key: string) =>
        s.billing.meterEvents.create({ event_name: 'e', identifier: id, payload: { stripe_customer_id: customer, value: '1' } }, { idempotencyKey: key });
      const results = await Promise.allSettled([send(a.id, 'a1', 'ka1'), send(a.id, 'a2', 'ka2'), send(b.id, 'b1', 'kb1')]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect((results[1] as PromiseRejectedResult).reason).toMatchObject({ statusCode: 429, code: 'rate_limit' });
      // Nothing was saved for the refused call: the same key runs it now.
      await expect(send(a.id, 'a2', 'ka2')).resolves.toMatchObject({ identifier: 'a2' });
      expect(slow.meterEvents().map((e) => e.identifier).sort()).toEqual(['a1', 'a2', 'b1']);
    } finally {
      await slow.close();
    }
  });

  it('meter event summaries are eventually consistent (summaryDelayMs)', async () => {
    const lagging = await startStripeServer({ summaryDelayMs: 300 });
    try {
      const s = new Stripe(lagging.secretKey, { ...lagging.sdkConfig, maxNetworkRetries: 0 });
      const cus = await s.customers.create();
      const meter = await s.billing.meters.create({ display_name: 'm', event_name: 'lag', default_aggregation: { formula: 'sum' } });
      await s.billing.meterEvents.create({ event_name: 'lag', payload: { stripe_customer_id: cus.id, value: '7' } });
      const now = Math.floor(Date.now() / 60_000) * 60;
      const sum = async () => (await s.billing.meters.listEventSummaries(meter.id, { customer: cus.id, start_time: now - 3600, end_time: now + 3600 })).data.reduce((t, x) => t + x.aggregated_value, 0);
      expect(await sum()).toBe(0);
      await new Promise((r) => setTimeout(r, 350));
      expect(await sum()).toBe(7);
    } finally {
      await lagging.close();
    }
  });

  it('surfaces a 500 without retries as StripeAPIError', async () => {
    server.injectFaults({ kind: 'server_error' });
    const err = await rejectionOf(stripe.customers.create());
    expect(err).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(err.statusCode).toBe(500);
  });

  it('surfaces connection resets as StripeConnectionError', async () => {
    // The SDK retries a reset connection once even with maxNetworkRetries 0.
    server.injectFaults({ kind: 'reset', count: 2 });
    const mark = server.requests.length;
    const err = await rejectionOf(stripe.customers.create());
    expect(err).toBeInstanceOf(Stripe.errors.StripeConnectionError);
    expect(requestsSince(mark).map((r) => r.fault)).toEqual(['reset', 'reset']);
    await expect(stripe.customers.create()).resolves.toMatchObject({ object: 'customer' });
  });

  it('replays the real result when the response was lost after processing', async () => {
    server.injectFaults({ kind: 'reset', afterProcessing: true, path: '/v1/customers' });
    const mark = server.requests.length;
    const customer = await client({ maxNetworkRetries: 1 }).customers.create({ email: 'lost@example.com' });
    const attempts = requestsSince(mark);
    expect(attempts.map((r) => r.replayed)).toEqual([false, true]);
    expect(server.customers.filter((c) => c.email === 'lost@example.com').map((c) => c.id)).toEqual([customer.id]);
  });

  it('hangs past the client timeout, then recovers', async () => {
    server.injectFaults({ kind: 'hang' });
    const err = await rejectionOf(client({ timeout: 200 }).customers.create());
    expect(err).toBeInstanceOf(Stripe.errors.StripeConnectionError);
    expect(err.message).toMatch(/timeout/);
    await expect(stripe.customers.create()).resolves.toMatchObject({ object: 'customer' });
  });

  it('answers a slow request once hangMs has passed', async () => {
    server.injectFaults({ kind: 'hang', hangMs: 100 });
    const started = Date.now();
    await expect(client({ timeout: 2000 }).customers.create()).resolves.toMatchObject({ object: 'customer' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(100);
  });

  it('only faults requests matching the path filter', async () => {
    const customer = await stripe.customers.create();
    server.injectFaults({ kind: 'rate_limit', path: '/v1/billing/meter_events', method: 'POST' });
    await expect(stripe.customers.create()).resolves.toBeDefined();
    const err = await rejectionOf(
      stripe.billing.meterEvents.create({ event_name: 'faulted', payload: { stripe_customer_id: customer.id, value: '1' } }),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
  });
});

describe('payments, refunds and transfers', () => {
  it('confirms an off-session payment and records payment_intent.succeeded', async () => {
    const customer = await stripe.customers.create();
    const pi = await stripe.paymentIntents.create({
      amount: 1000, currency: 'usd', customer: customer.id, payment_method: 'pm_card_visa', off_session: true, confirm: true,
    });
    expect(pi).toMatchObject({ status: 'succeeded', amount_received: 1000 });
    await expect(stripe.paymentIntents.retrieve(pi.id)).resolves.toMatchObject({ status: 'succeeded' });
    const event = server.events.find((e) => e.type === 'payment_intent.succeeded' && (e.data.object as { id: string }).id === pi.id);
    expect(event).toBeDefined();
  });

  it('declines with a 402 card_error carrying the PaymentIntent', async () => {
    const customer = await stripe.customers.create();
    server.setPaymentOutcome(customer.id, 'insufficient_funds');
    const err = await rejectionOf(
      stripe.paymentIntents.create({
        amount: 1000, currency: 'usd', customer: customer.id, payment_method: 'pm_card_visa', off_session: true, confirm: true,
      }),
    );
    expect(err).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(err).toMatchObject({ statusCode: 402, code: 'card_declined', decline_code: 'insufficient_funds' });
    expect(err.payment_intent?.status).toBe('requires_payment_method');
    const failed = server.events.filter((e) => e.type === 'payment_intent.payment_failed');
    expect(failed.map((e) => (e.data.object as { id: string }).id)).toContain(err.payment_intent?.id);
  });

  it('declines Stripe’s declining test payment methods', async () => {
    const err = await rejectionOf(
      stripe.paymentIntents.create({ amount: 500, currency: 'usd', payment_method: 'pm_card_chargeDeclined', confirm: true }),
    );
    expect(err).toMatchObject({ code: 'card_declined', decline_code: 'generic_decline' });
  });

  it('refuses to confirm without a payment method, and below the minimum amount', async () => {
    const customer = await stripe.customers.create();
    expect(await rejectionOf(
      stripe.paymentIntents.create({ amount: 1000, currency: 'usd', customer: customer.id, confirm: true, off_session: true }),
    )).toMatchObject({ code: 'payment_intent_unexpected_state' });
    expect(await rejectionOf(
      stripe.paymentIntents.create({ amount: 49, currency: 'usd', payment_method: 'pm_card_visa', confirm: true }),
    )).toMatchObject({ code: 'amount_too_small', param: 'amount' });
  });

  it('refunds up to the unrefunded amount and records charge.refunded', async () => {
    const pi = await stripe.paymentIntents.create({ amount: 1000, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
    await expect(stripe.refunds.create({ payment_intent: pi.id, amount: 300 })).resolves.toMatchObject({ amount: 300 });
    expect(await rejectionOf(stripe.refunds.create({ payment_intent: pi.id, amount: 800 })))
      .toMatchObject({ param: 'amount', message: 'Refund amount ($8.00) is greater than unrefunded amount on charge ($7.00)' });
    const rest = await stripe.refunds.create({ charge: pi.latest_charge as string });
    expect(rest.amount).toBe(700);
    expect(await rejectionOf(stripe.refunds.create({ payment_intent: pi.id })))
      .toMatchObject({ code: 'charge_already_refunded' });
    const refunded = server.events.filter(
      (e) => e.type === 'charge.refunded' && (e.data.object as { id: string }).id === pi.latest_charge,
    );
    expect(refunded.map((e) => (e.data.object as { amount_refunded: number }).amount_refunded)).toEqual([300, 1000]);
    expect(server.refunds.filter((r) => r.payment_intent === pi.id)).toHaveLength(2);
  });

  it('requires amount, currency and a known destination for transfers', async () => {
    expect(await rejectionOf(stripe.transfers.create({ amount: 100, currency: 'usd' } as Stripe.TransferCreateParams)))
      .toMatchObject({ code: 'parameter_missing', param: 'destination' });
    expect(await rejectionOf(stripe.transfers.create({ amount: 100, currency: 'usd', destination: 'acct_unknown' })))
      .toMatchObject({ code: 'resource_missing', param: 'destination' });
    const account = server.addConnectedAccount();
    const pi = await stripe.paymentIntents.create({ amount: 1200, currency: 'usd', payment_method: 'pm_card_visa', confirm: true });
    const transfer = await stripe.transfers.create({
      amount: 885, currency: 'usd', destination: account, source_transaction: pi.latest_charge as string,
    });
    expect(transfer).toMatchObject({ object: 'transfer', amount: 885, destination: account });
    expect(server.transfers.map((t) => t.id)).toContain(transfer.id);
  });

  it('creates a checkout session and completes it on request', async () => {
    const customer = await stripe.customers.create();
    const session = await stripe.checkout.sessions.create({
      mode: 'payment',
      customer: customer.id,
      success_url: 'https://example.com/ok',
      line_items: [{ quantity: 2, price_data: { currency: 'usd', unit_amount: 1000, product_data: { name: 'Top-up' } } }],
      metadata: { purpose: 'topup' },
    });
    expect(session).toMatchObject({ amount_total: 2000, status: 'open', payment_status: 'unpaid' });
    const completed = server.completeCheckoutSession(session.id);
    expect(completed.type).toBe('checkout.session.completed');
    const retrieved = await stripe.checkout.sessions.retrieve(session.id);
    expect(retrieved).toMatchObject({ status: 'complete', payment_status: 'paid' });
  });
});

describe('webhooks', () => {
  it('produces signatures the SDK accepts', async () => {
    const event = server.events.at(-1);
    const payload = JSON.stringify(event);
    const header = signPayload(payload, server.webhookSecret);
    const parsed = stripe.webhooks.constructEvent(payload, header, server.webhookSecret);
    expect(parsed.id).toBe(event?.id);
  });

  it('produces signatures the SDK rejects with the wrong secret or when stale', () => {
    const payload = JSON.stringify({ id: 'evt_1', object: 'event' });
    expect(() => stripe.webhooks.constructEvent(payload, signPayload(payload, 'whsec_other'), server.webhookSecret))
      .toThrow(Stripe.errors.StripeSignatureVerificationError);
    const stale = signPayload(payload, server.webhookSecret, nowSeconds() - 600);
    expect(() => stripe.webhooks.constructEvent(payload, stale, server.webhookSecret))
      .toThrow(/Timestamp outside the tolerance zone/);
  });

  it('delivers the same signed event as often as asked', async () => {
    const received: string[] = [];
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
      req.on('end', () => {
        try {
          const event = stripe.webhooks.constructEvent(body, req.headers['stripe-signature'] ?? '', server.webhookSecret);
          received.push(event.id);
          res.writeHead(200).end('{"received":true}');
        } catch {
          res.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhooks/stripe`;
      const event = server.events.find((e) => e.type === 'payment_intent.succeeded');
      expect(event).toBeDefined();
      const first = await server.sendWebhook(url, event);
      const second = await server.sendWebhook(url, event);
      expect([first.status, second.status]).toEqual([200, 200]);
      expect(received).toEqual([event?.id, event?.id]);
    } finally {
      await new Promise<void>((resolve) => receiver.close(() => resolve()));
    }
  });
});

describe('invoice items', () => {
  it('creates an item for an existing customer, in integer minor units or as a decimal rounded half-up', async () => {
    const customer = await stripe.customers.create({ name: 'Items' });
    const whole = await stripe.invoiceItems.create({ customer: customer.id, amount: 2900, currency: 'usd', description: 'base', period: { start: 1_700_000_000, end: 1_702_000_000 }, metadata: { k: 'v' } });
    expect(whole).toMatchObject({ object: 'invoiceitem', amount: 2900, currency: 'usd', customer: customer.id, description: 'base', period: { start: 1_700_000_000, end: 1_702_000_000 }, metadata: { k: 'v' }, invoice: null });
    const fine = await stripe.invoiceItems.create({ customer: customer.id, unit_amount_decimal: Stripe.Decimal.from('200.5'), quantity: 1, currency: 'usd' });
    expect(fine).toMatchObject({ amount: 201, unit_amount_decimal: '200.5' });
    const credit = await stripe.invoiceItems.create({ customer: customer.id, amount: -150, currency: 'usd' });
    expect(credit.amount).toBe(-150);
    expect(server.invoiceItems.filter((i) => i.customer === customer.id)).toHaveLength(3);
    const listed = await stripe.invoiceItems.list({ customer: customer.id, limit: 10 });
    expect(listed.data.map((i) => i.id).sort()).toEqual([whole.id, fine.id, credit.id].sort());
  });

  it('refuses what Stripe refuses: no customer, an unknown one, both or neither amount, a bad amount, currency, decimal, description or period', async () => {
    const customer = await stripe.customers.create({});
    const before = server.invoiceItems.length;
    const cases: Array<[Record<string, unknown>, RegExp, string?]> = [
      [{ amount: 100, currency: 'usd' }, /Missing required param: customer/, 'customer'],
      [{ customer: 'cus_nope', amount: 100, currency: 'usd' }, /No such customer: 'cus_nope'/, 'customer'],
      [{ customer: customer.id, currency: 'usd' }, /Missing required param: amount/, 'amount'],
      [{ customer: customer.id, amount: 100, unit_amount_decimal: '1.5', currency: 'usd' }, /only specify one of these parameters: amount, unit_amount_decimal/],
      [{ customer: customer.id, amount: '12.5', currency: 'usd' }, /Invalid integer: 12.5/, 'amount'],
      [{ customer: customer.id, amount: 100 }, /Missing required param: currency/, 'currency'],
      [{ customer: customer.id, amount: 100, currency: 'dollars' }, /Invalid currency/, 'currency'],
      [{ customer: customer.id, unit_amount_decimal: '1.1234567890123', currency: 'usd' }, /at most 12 decimal places/, 'unit_amount_decimal'],
      [{ customer: customer.id, amount: 100, currency: 'usd', description: 'x'.repeat(5001) }, /at most 5000 characters/, 'description'],
      [{ customer: customer.id, amount: 100, currency: 'usd', period: { start: 20, end: 10 } }, /period end must be greater than or equal/, 'period[end]'],
    ];
    for (const [params, message, param] of cases) {
      const err = await rejectionOf(stripe.invoiceItems.create(params as unknown as Stripe.InvoiceItemCreateParams));
      expect(err.statusCode, JSON.stringify(params).slice(0, 80)).toBe(400);
      expect(err.message).toMatch(message);
      if (param) expect(err.param).toBe(param);
    }
    expect(server.invoiceItems).toHaveLength(before);
  });

  it('keeps idempotency: the same key and params replay the first item, the same key with other params is an idempotency_error', async () => {
    const customer = await stripe.customers.create({});
    const params = { customer: customer.id, amount: 500, currency: 'usd', description: 'base' };
    const first = await stripe.invoiceItems.create(params, { idempotencyKey: 'ii-key-1' });
    const again = await stripe.invoiceItems.create(params, { idempotencyKey: 'ii-key-1' });
    expect(again.id).toBe(first.id);
    const err = await rejectionOf(stripe.invoiceItems.create({ ...params, amount: 501 }, { idempotencyKey: 'ii-key-1' }));
    expect(err.statusCode).toBe(400);
    expect(err.type).toBe('StripeIdempotencyError');
    expect(server.invoiceItems.filter((i) => i.customer === customer.id)).toHaveLength(1);
  });
});
