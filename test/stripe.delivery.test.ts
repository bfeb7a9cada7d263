import Stripe from 'stripe';
import { afterEach, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { stripeReconcile, stripeSync } from '../src/stripe/cli';
import { OutboxDelivery } from '../src/stripe/outbox';
import { BACKENDS } from './support/backends';
import { eventsByIdentifier, outboxRows, sdk, stripeLedger } from './support/stripe-fixture';
import { type RecordedRequest, startStripeServer, type StripeServerOptions, type StripeTestServer } from './support/stripe-server';

/**
 * Delivery under the live API's rules, as the loopback Stripe keeps them:
 * saved 500s replayed per idempotency key, one concurrent meter-event call per
 * customer and meter, 429s with Retry-After, eventually consistent summaries.
 */
const PATH = '/v1/billing/meter_events';
const ALL_TIME = '2000-01-01T00:00:00Z..2100-01-01T00:00:00Z';
const FAST = { backoff: { baseMs: 5, capMs: 50 } };

const meterPosts = (server: StripeTestServer): RecordedRequest[] => server.requests.filter((r) => r.method === 'POST' && r.path === PATH);
const customerOf = (r: RecordedRequest) => String((r.params.payload as Record<string, string> | undefined)?.stripe_customer_id ?? '');

describe.each(BACKENDS)('stripe delivery under Stripe rules on $name', (backend) => {
  let server: StripeTestServer;
  const opened: SqlLedger[] = [];
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((l) => l.close().catch(() => undefined)));
    expect(server.internalErrors).toEqual([]);
    await server.close();
  });
  const setup = async (serverOpts: StripeServerOptions, customers: string[]) => {
    server = await startStripeServer(serverOpts);
    const s = await stripeLedger(backend, server, { customers });
    opened.push(s.ledger);
    return s;
  };
  /** Every row at Stripe exactly once with its value, and per customer Stripe's sum = the ledger's net usage floored to the micro-dollar. */
  const expectExactlyOnce = async (ledger: SqlLedger, customers: string[], fund = '1000') => {
    const atStripe = new Map([...eventsByIdentifier(server)].filter(([id]) => id.startsWith('fb_'))); // throws on a duplicate identifier
    const rows = await outboxRows(ledger);
    expect(atStripe.size).toBe(rows.length);
    for (const r of rows) expect(atStripe.get(r.id)).toBe(r.value);
    const stripeIds = new Map((await ledger.dialect.read((c) => c.query('SELECT * FROM billing_stripe_customers'))).map((r) => [String(r.customer_id), String(r.stripe_customer_id)]));
    for (const id of customers) {
      const net = parseUsd(fund) - (await ledger.balance(id)).balance;
      const sum = server.meterEvents().filter((e) => e.customer === stripeIds.get(id)).reduce((s, e) => s + BigInt(e.value), 0n);
      expect(sum, id).toBe(net / 1000n);
    }
  };

  it('a saved 500 is replayed for its key, so each attempt uses a fresh key: the row is delivered once, not failed', async () => {
    const { ledger, stripe } = await setup({}, ['acme']);
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.0123456') , idempotencyKey: 'c1' });
    // Three 500s that Stripe saved under their keys, the middle one after the event was recorded.
    server.injectFaults({ kind: 'server_error', count: 1, path: PATH });
    server.injectFaults({ kind: 'server_error', count: 1, path: PATH, afterProcessing: true });
    server.injectFaults({ kind: 'server_error', count: 1, path: PATH });
    const r = await stripeSync(ledger, { stripe, ...FAST });
    expect(r).toMatchObject({ pending: 0, delivered: 1, failed: 0, deliveredNow: 0, duplicatesNow: 1 });
    const posts = meterPosts(server);
    expect(posts.map((p) => p.status)).toEqual([500, 500, 500, 400]);
    expect(new Set(posts.map((p) => p.idempotencyKey)).size).toBe(4);
    // What reusing a key would have met: the saved 500, replayed, with Stripe-Should-Retry: false.
    const first = posts[0]!;
    const replay = await fetch(`${server.url}${PATH}`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.secretKey}`, 'Content-Type': 'application/x-www-form-urlencoded', 'Idempotency-Key': first.idempotencyKey! },
      body: first.rawBody,
    });
    expect(replay.status).toBe(500);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('stripe-should-retry')).toBe('false');
    await expectExactlyOnce(ledger, ['acme']);
  });

  it('one request at a time per customer and meter, many customers at once: no 429 from the concurrency rule', async () => {
    const customers = ['heavy', 'c1', 'c2', 'c3', 'c4', 'c5'];
    const { ledger, stripe } = await setup({ meterEventLatencyMs: 8 }, customers);
    for (let i = 0; i < 60; i++) await ledger.charge({ customerId: 'heavy', amount: 1_234_567n + BigInt(i), idempotencyKey: `h${i}` });
    for (let i = 0; i < 50; i++) await ledger.charge({ customerId: customers[1 + (i % 5)]!, amount: 7_654_321n + BigInt(i), idempotencyKey: `o${i}` });
    const r = await stripeSync(ledger, { stripe, ...FAST, concurrency: 8, ratePerSecond: 100_000 });
    expect(r).toMatchObject({ pending: 0, delivered: 110, failed: 0 });
    const posts = meterPosts(server);
    expect(posts.filter((p) => p.concurrencyLimited)).toEqual([]);
    expect(server.maxMeterCallsPerCustomerMeter).toBe(1);
    // Different customers did overlap in time.
    const overlaps = posts.some((a) => posts.some((b) => customerOf(a) !== customerOf(b) && a.at < (b.answeredAt ?? 0) && b.at < (a.answeredAt ?? 0)));
    expect(overlaps).toBe(true);
    await expectExactlyOnce(ledger, customers);
  });

  it('a 429 makes only that customer wait, honouring Retry-After; 429s never open the breaker', async () => {
    const { ledger, stripe } = await setup({ meterEventLatencyMs: 30, retryAfterSeconds: 1 }, ['acme', 'beta']);
    for (let i = 0; i < 12; i++) await ledger.charge({ customerId: i % 2 ? 'acme' : 'beta', amount: 3_000_001n * BigInt(i + 1), idempotencyKey: `c${i}` });
    // Another integration keeps calling for acme's meter, so Stripe's per-customer rule answers our calls with 429 + Retry-After: 1.
    const acme = (await ledger.dialect.read((c) => c.query("SELECT stripe_customer_id FROM billing_stripe_customers WHERE customer_id = 'acme'")))[0]!.stripe_customer_id as string;
    const other = sdk(server);
    const until = Date.now() + 2500;
    const competitor = (async () => {
      for (let i = 0; Date.now() < until; i++) {
        await other.billing.meterEvents.create({ event_name: 'flowise_billing_usage', identifier: `other_${i}`, payload: { stripe_customer_id: acme, value: '0' } }).catch(() => undefined);
      }
    })();
    const delivery = new OutboxDelivery(ledger, { stripe, ...FAST, concurrency: 4, breaker: { failureThreshold: 2, cooldownMs: 60_000 } });
    const status = await delivery.run({ timeoutMs: 20_000 });
    await competitor;
    expect(status).toMatchObject({ pending: 0, failed: 0, breaker: 'closed' });
    const ours = meterPosts(server).filter((p) => String(p.params.identifier).startsWith('fb_'));
    const limited = ours.filter((p) => p.concurrencyLimited);
    expect(limited.length).toBeGreaterThan(0);
    for (const p of limited) {
      // Our next call for that customer came no sooner than Retry-After.
      const next = ours.find((q) => q.at > p.at && customerOf(q) === customerOf(p));
      if (next) expect(next.at - p.answeredAt!).toBeGreaterThanOrEqual(950);
    }
    // Then plain rate-limit 429s (no Retry-After), ten in a row: with a threshold of 2 they would open the breaker
    // for a minute if they counted, and this run would time out with rows pending.
    for (let i = 0; i < 6; i++) await ledger.charge({ customerId: i % 2 ? 'acme' : 'beta', amount: 1_000_999n, idempotencyKey: `d${i}` });
    const mark = server.requests.length;
    server.injectFaults({ kind: 'rate_limit', count: 10, path: PATH });
    expect(await delivery.run({ timeoutMs: 20_000 })).toMatchObject({ pending: 0, failed: 0, breaker: 'closed' });
    expect(server.requests.slice(mark).filter((p) => p.fault === 'rate_limit')).toHaveLength(10);
    await expectExactlyOnce(ledger, ['acme', 'beta']);
  });

  it('recovery: after a successful probe the rest goes on at once (within 1 s of the probe, from recorded request times)', async () => {
    const customers = ['a', 'b', 'c', 'd'];
    const { ledger, stripe } = await setup({}, customers);
    for (let i = 0; i < 40; i++) await ledger.charge({ customerId: customers[i % 4]!, amount: 2_500_000n + BigInt(i), idempotencyKey: `r${i}` });
    // An outage: the breaker opens, its first probe fails, the second succeeds. A cooldown of 1.5 s means a stall after the
    // probe (the old behaviour) would show as a gap of 1.5 s.
    // (Unsaved 500s, as from in front of the API, so this test is about recovery alone, not key reuse.)
    server.injectFaults({ kind: 'server_error', count: 100_000, path: PATH, saved: false });
    const end = setTimeout(() => server.clearFaults(), 2000);
    const r = await stripeSync(ledger, { stripe, ...FAST, concurrency: 4, breaker: { failureThreshold: 3, cooldownMs: 1500, maxCooldownMs: 1500 } });
    clearTimeout(end);
    expect(r).toMatchObject({ pending: 0, delivered: 40, failed: 0 });
    const posts = meterPosts(server);
    // Probes: the calls that came after a gap of at least a cooldown.
    const probes = posts.filter((p, i) => i > 0 && p.at - posts[i - 1]!.at >= 1400);
    expect(probes.length).toBe(2);
    expect(probes[0]!.status).toBe(500);
    const probe = probes[1]!;
    expect(probe.status).toBe(200);
    const after = posts.filter((p) => p.at >= probe.answeredAt!);
    expect(after.length).toBeGreaterThan(30);
    expect(after[0]!.at - probe.answeredAt!).toBeLessThan(1000);
    // And no further stall until the end.
    for (let i = 1; i < after.length; i++) expect(after[i]!.at - after[i - 1]!.at).toBeLessThan(1000);
    await expectExactlyOnce(ledger, customers);
  });

  it('reconcile waits for eventually consistent summaries; a real difference survives the settle window', async () => {
    const { ledger, stripe } = await setup({ summaryDelayMs: 1200 }, ['acme', 'beta']);
    for (let i = 0; i < 6; i++) await ledger.charge({ customerId: i % 2 ? 'acme' : 'beta', amount: parseUsd('0.25'), idempotencyKey: `e${i}` });
    await stripeSync(ledger, { stripe, ...FAST });
    const hasty = await stripeReconcile(ledger, { stripe, period: ALL_TIME });
    expect(hasty.ok).toBe(false); // Stripe has not aggregated them yet
    const settled = await stripeReconcile(ledger, { stripe, period: ALL_TIME, settleMs: 10_000 });
    expect(settled.ok).toBe(true);
    expect(settled.settledMs).toBeGreaterThan(0);
    // A row Stripe never counts (here: sent behind our back to another customer) stays a difference after the window.
    await ledger.charge({ customerId: 'acme', amount: parseUsd('1'), idempotencyKey: 'lost' });
    const lost = (await outboxRows(ledger)).at(-1)!;
    await ledger.dialect.writeTransaction((c) => c.run("UPDATE billing_stripe_outbox SET status = 'delivered' WHERE id = ?", [lost.id]));
    const after = await stripeReconcile(ledger, { stripe, period: ALL_TIME, settleMs: 2_000 });
    expect(after.ok).toBe(false);
    expect(after.differences.map((d) => [d.customerId, d.difference])).toEqual([['acme', '-1000000']]);
  });
});

describe('stripe SDK errors carry what delivery needs', () => {
  it('Retry-After and Stripe-Should-Retry reach the error headers', async () => {
    const server = await startStripeServer({ meterEventLatencyMs: 50, retryAfterSeconds: 2 });
    try {
      const stripe = new Stripe(server.secretKey, { ...server.sdkConfig, maxNetworkRetries: 0 });
      const cus = await stripe.customers.create();
      const send = (i: number) => stripe.billing.meterEvents.create({ event_name: 'x', identifier: `i${i}`, payload: { stripe_customer_id: cus.id, value: '1' } });
      const results = await Promise.allSettled([send(1), send(2)]);
      const rejected = results.find((r) => r.status === 'rejected') as PromiseRejectedResult;
      expect(rejected.reason).toMatchObject({ statusCode: 429, code: 'rate_limit' });
      expect(rejected.reason.headers['retry-after']).toBe('2');
    } finally {
      await server.close();
    }
  });
});
