import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { meterEventIdentifier } from '../src/ledger/outbox';
import { parseUsd } from '../src/money';
import { stripeReconcile, stripeStatus, stripeSync } from '../src/stripe/cli';
import { configureOutbox } from '../src/stripe/customers';
import { OutboxDelivery } from '../src/stripe/outbox';
import { BACKENDS } from './support/backends';
import { eventsByIdentifier, openFor, outboxRows, sdk, stripeLedger } from './support/stripe-fixture';
import { startStripeServer, type StripeTestServer } from './support/stripe-server';

const usd = parseUsd;
const FAST = { backoff: { baseMs: 5, capMs: 50 }, breaker: { failureThreshold: 5, cooldownMs: 30, maxCooldownMs: 200 } };

describe.each(BACKENDS)('stripe meter-event outbox on $name', (backend) => {
  let server: StripeTestServer;
  const opened: SqlLedger[] = [];
  beforeEach(async () => {
    server = await startStripeServer();
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((l) => l.close().catch(() => undefined)));
    expect(server.internalErrors).toEqual([]);
    await server.close();
  });
  const setup = async (opts: Parameters<typeof stripeLedger>[2] = {}) => {
    const s = await stripeLedger(backend, server, opts);
    opened.push(s.ledger);
    return s;
  };

  it('writes the outbox row in the same transaction as the charge, settle or refund; nothing for a refused charge', async () => {
    const { ledger } = await setup({ fund: '10' });
    const ch = await ledger.charge({ customerId: 'acme', amount: usd('0.08'), idempotencyKey: 'c1', chargeType: 'ObjectGenerator' });
    const h = await ledger.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h1' });
    await ledger.settle({ holdId: h.id, amount: usd('0.195'), idempotencyKey: 's1', chargeType: 'Zipper' });
    await ledger.release({ holdId: (await ledger.hold({ customerId: 'acme', amount: usd('1'), idempotencyKey: 'h2' })).id, idempotencyKey: 'r2' });
    await expect(ledger.charge({ customerId: 'acme', amount: usd('500'), idempotencyKey: 'too-much' })).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    const refund = await ledger.refund({ chargeId: ch.id, amount: usd('0.03'), idempotencyKey: 'rf1' });
    // Replays change nothing.
    await ledger.charge({ customerId: 'acme', amount: usd('0.08'), idempotencyKey: 'c1', chargeType: 'ObjectGenerator' });

    const rows = await outboxRows(ledger);
    expect(rows.map((r) => [r.kind, r.value, r.amountNanos])).toEqual([
      ['charge', 80_000n, 80_000_000n],
      ['settle', 195_000n, 195_000_000n],
      ['refund', -30_000n, -30_000_000n],
    ]);
    const entries = await ledger.statement('acme');
    for (const r of rows) {
      const e = entries.find((x) => x.id === r.entryId)!;
      expect(r.id).toBe(meterEventIdentifier(e.id));
      expect(r.amountNanos).toBe(-e.amount);
    }
    expect(refund.id).toBe(rows[2]!.entryId);
  });

  it('whole micro-dollar values carry the sub-micro remainder: the sum is floor(ledger total / 1000) however many events', async () => {
    const { ledger } = await setup({ fund: '100' });
    // 7 charges of 400 nanos: total 2,800 nanos → 2 µ$, sent as values on the 3rd and 5th charge.
    for (let i = 0; i < 7; i++) await ledger.charge({ customerId: 'acme', amount: 400n, idempotencyKey: `tiny${i}` });
    const rows = await outboxRows(ledger);
    expect(rows.map((r) => r.value)).toEqual([1n, 1n]);
    // 1,000,000 tokens at $0.000025 each, as 1,000 concurrent charges of 1,000 tokens: exactly $25 = 25,000,000 µ$.
    await Promise.all(Array.from({ length: 1000 }, (_, i) => ledger.charge({ customerId: 'acme', amount: 25_000n * 1000n, idempotencyKey: `tok${i}` })));
    const after = await outboxRows(ledger);
    expect(after.slice(2).reduce((s, r) => s + r.value, 0n)).toBe(25_000_000n);
  });

  it('writes no outbox rows while the outbox is off', async () => {
    const target = await backend.freshTarget();
    const ledger = await openFor(backend, target);
    opened.push(ledger);
    await ledger.createCustomer({ id: 'acme' });
    await ledger.topUp({ customerId: 'acme', amount: usd('1'), idempotencyKey: 't' });
    await ledger.charge({ customerId: 'acme', amount: usd('0.5'), idempotencyKey: 'c' });
    expect(await outboxRows(ledger)).toEqual([]);
    await configureOutbox(ledger, { enabled: false });
    await ledger.charge({ customerId: 'acme', amount: usd('0.1'), idempotencyKey: 'c2' });
    expect(await outboxRows(ledger)).toEqual([]);
  });

  it('delivers each event exactly once; a resend is a duplicate Stripe rejects, counted as delivered; reconcile shows zero difference', async () => {
    const { ledger, stripe } = await setup({ customers: ['acme', 'beta'] });
    for (let i = 0; i < 30; i++) await ledger.charge({ customerId: i % 2 ? 'acme' : 'beta', amount: usd('0.01') + BigInt(i), idempotencyKey: `c${i}` });
    // Five of them already reached Stripe earlier (say, sent by an older worker under other idempotency keys).
    const early = (await outboxRows(ledger)).slice(0, 5);
    const stripeIds = new Map((await ledger.dialect.read((c) => c.query('SELECT * FROM billing_stripe_customers'))).map((r) => [String(r.customer_id), String(r.stripe_customer_id)]));
    for (const r of early) {
      await stripe.billing.meterEvents.create({ event_name: 'flowise_billing_usage', identifier: r.id, payload: { stripe_customer_id: stripeIds.get(r.customerId)!, value: r.value.toString() } });
    }
    const lines: string[] = [];
    const first = await stripeSync(ledger, { stripe, ...FAST }, (l) => lines.push(l));
    expect(first).toMatchObject({ pending: 0, delivered: 30, failed: 0, deliveredNow: 25, duplicatesNow: 5 });
    expect(lines.join('\n')).toMatch(/25 delivered, 5 already in Stripe/);
    // Simulate a worker that died after Stripe answered but before it marked the rows: every attempt has a fresh
    // idempotency key, so each resend is answered as a duplicate identifier — delivered, never doubled.
    await ledger.dialect.writeTransaction((c) => c.run("UPDATE billing_stripe_outbox SET status = 'pending', next_attempt_at = 0"));
    const second = await stripeSync(ledger, { stripe, ...FAST });
    expect(second).toMatchObject({ pending: 0, delivered: 30 });
    expect(second.duplicatesNow).toBe(30);
    const atStripe = eventsByIdentifier(server);
    const rows = await outboxRows(ledger);
    expect(atStripe.size).toBe(30);
    for (const r of rows) expect(atStripe.get(r.id)).toBe(r.value);
    // Every POST carried an idempotency key of its own, named after the event's identifier.
    const posts = server.requests.filter((r) => r.path === '/v1/billing/meter_events').slice(5);
    expect(posts.every((p) => p.idempotencyKey?.startsWith(`fbme:${String(p.params.identifier)}:`))).toBe(true);
    expect(new Set(posts.map((p) => p.idempotencyKey)).size).toBe(posts.length);

    const report = await stripeReconcile(ledger, { stripe, period: '2000-01-01T00:00:00Z..2100-01-01T00:00:00Z' });
    expect(report.ok).toBe(true);
    expect(report.lines).toHaveLength(2);
    expect(report.lines.every((l) => l.difference === '0')).toBe(true);
    expect(await stripeStatus(ledger)).toMatchObject({ pending: 0, delivered: 30, failed: 0 });
  });

  it('fault injection: 429s, 500s, hangs and resets for a while, then recovery — nothing lost or duplicated, reconcile zero', async () => {
    const { ledger, stripe } = await setup({ customers: ['acme', 'beta', 'gamma'] });
    const charges = await Promise.all(
      Array.from({ length: 60 }, (_, i) => ledger.charge({ customerId: ['acme', 'beta', 'gamma'][i % 3]!, amount: usd('0.02') + BigInt(i * 1000), idempotencyKey: `f${i}` })),
    );
    await ledger.refund({ chargeId: charges[0]!.id, idempotencyKey: 'rf' });
    const path = '/v1/billing/meter_events';
    server.injectFaults({ kind: 'rate_limit', count: 8, path });
    server.injectFaults({ kind: 'server_error', count: 6, path });
    server.injectFaults({ kind: 'server_error', count: 4, path, afterProcessing: true }); // Stripe did it, client never heard
    server.injectFaults({ kind: 'reset', count: 4, path });
    server.injectFaults({ kind: 'reset', count: 2, path, afterProcessing: true });
    server.injectFaults({ kind: 'hang', count: 2, path, hangMs: 1_500 });
    const client = sdk(server, { timeout: 300 });
    const result = await stripeSync(ledger, { stripe: client, ...FAST, concurrency: 4 });
    expect(result).toMatchObject({ pending: 0, failed: 0, delivered: 61 });
    expect(result.retriedNow).toBeGreaterThan(0);
    // The afterProcessing faults: Stripe stored the event, the client never heard; the retry (a fresh key) was
    // answered as a duplicate identifier. Only the SDK's own one-time retry of a reset connection reuses a key.
    const posts = server.requests.filter((r) => r.path === path);
    const perKey = new Map<string, number>();
    for (const p of posts) perKey.set(p.idempotencyKey!, (perKey.get(p.idempotencyKey!) ?? 0) + 1);
    expect(Math.max(...perKey.values())).toBeLessThanOrEqual(2);
    expect(result.duplicatesNow).toBeGreaterThan(0);
    const atStripe = eventsByIdentifier(server);
    const rows = await outboxRows(ledger);
    expect(atStripe.size).toBe(rows.length);
    for (const r of rows) expect(atStripe.get(r.id)).toBe(r.value);
    const report = await stripeReconcile(ledger, { stripe, period: '2000-01-01T00:00:00Z..2100-01-01T00:00:00Z' });
    expect(report.differences).toEqual([]);
  });

  it('the circuit breaker stops hammering a failing Stripe, then recovers', async () => {
    const { ledger, stripe } = await setup();
    for (let i = 0; i < 20; i++) await ledger.charge({ customerId: 'acme', amount: usd('0.01'), idempotencyKey: `b${i}` });
    server.injectFaults({ kind: 'server_error', count: 1000, path: '/v1/billing/meter_events' });
    let now = Date.now();
    const delivery = new OutboxDelivery(ledger, { stripe, concurrency: 1, backoff: { baseMs: 1, capMs: 1 }, breaker: { failureThreshold: 3, cooldownMs: 60_000 }, clock: () => now });
    const r1 = await delivery.deliverRound();
    expect(r1.requests).toBe(3); // then the breaker opened; the other rows wait without an attempt
    expect(r1.waiting).toBe(17);
    expect(delivery.breaker.state(now)).toBe('open');
    now += 10;
    expect((await delivery.deliverRound()).requests).toBe(0);
    server.clearFaults();
    now += 60_000;
    const r3 = await delivery.deliverRound();
    expect(r3.delivered).toBe(20);
    expect(delivery.breaker.state(now)).toBe('closed');
    expect((await delivery.status()).pending).toBe(0);
  });

  it('a rejected event is failed (not retried forever) and shows in status; retry-failed requeues it', async () => {
    const { ledger, stripe } = await setup();
    await ledger.charge({ customerId: 'acme', amount: usd('0.01'), idempotencyKey: 'x' });
    // Point acme at a Stripe customer that does not exist: Stripe answers 400 resource_missing.
    await ledger.dialect.writeTransaction((c) => c.run("UPDATE billing_stripe_customers SET stripe_customer_id = 'cus_missing' WHERE customer_id = 'acme'"));
    const r = await stripeSync(ledger, { stripe, ...FAST });
    expect(r).toMatchObject({ pending: 0, failed: 1, delivered: 0 });
    expect(r.lastErrors[0]!.error).toMatch(/No such customer/);
  });

  it('optional aggregation: one event per customer, meter and closed window; reconcile still zero', async () => {
    let now = Date.parse('2026-11-23T08:10:00Z');
    server = await startStripeServer({ now: () => now });
    const { ledger, stripe } = await setup({ customers: ['acme', 'beta'], clock: () => now });
    for (let i = 0; i < 40; i++) {
      now += 3 * 60_000; // 40 charges over two hours
      await ledger.charge({ customerId: i % 4 ? 'acme' : 'beta', amount: usd('0.013'), idempotencyKey: `a${i}` });
    }
    now = Date.parse('2026-11-23T12:00:00Z');
    const delivery = new OutboxDelivery(ledger, { stripe, aggregateWindowSeconds: 3600, clock: () => now, ...FAST });
    const status = await delivery.run({ timeoutMs: 10_000 });
    expect(status).toMatchObject({ pending: 0, delivered: 40 });
    const events = server.meterEvents();
    expect(events.length).toBeLessThanOrEqual(6); // 2 customers × (≤ 3 hour windows)
    expect(events.every((e) => e.identifier.startsWith('fba_'))).toBe(true);
    const report = await stripeReconcile(ledger, { stripe, period: '2026-11' });
    expect(report.ok).toBe(true);
    expect(report.lines.map((l) => l.ledgerUnits).sort()).toEqual(['130000', '390000']);
  });
});
