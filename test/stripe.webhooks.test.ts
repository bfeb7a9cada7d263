import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { startWebhookServer, type WebhookServer } from '../src/stripe/webhooks';
import { BACKENDS } from './support/backends';
import { stripeLedger } from './support/stripe-fixture';
import { signPayload, startStripeServer, type StripeTestServer } from './support/stripe-server';

/** Correctly signed but badly shaped events, idle sockets, the connection cap, and a reason for every ignored event. */
describe.each(BACKENDS)('stripe webhooks on $name', (backend) => {
  let server: StripeTestServer;
  let hooks: WebhookServer | null = null;
  let ledger: SqlLedger | null = null;
  const log: string[] = [];
  afterEach(async () => {
    await hooks?.close();
    hooks = null;
    await ledger?.close();
    ledger = null;
    log.length = 0;
    await server.close();
  });
  const setup = async (opts: { idleTimeoutMs?: number; maxConnections?: number } = {}) => {
    server = await startStripeServer();
    const s = await stripeLedger(backend, server, { fund: '10' });
    ledger = s.ledger;
    hooks = await startWebhookServer({ ledger: s.ledger, secret: server.webhookSecret, stripe: s.stripe, log: (l) => log.push(l) }, opts);
    return s;
  };
  const post = (body: string) =>
    fetch(hooks!.url, { method: 'POST', headers: { 'Content-Type': 'application/json', 'Stripe-Signature': signPayload(body, server.webhookSecret) }, body });
  const snapshot = async (l: SqlLedger) => ({
    balance: await l.balance('acme'),
    entries: (await l.statement('acme')).length,
    webhooks: (await l.dialect.read((c) => c.query('SELECT COUNT(*) AS n FROM billing_stripe_webhook_events')))[0]!.n,
  });
  const topUp = (id: string, amount: unknown, extra: Record<string, unknown> = {}) => ({
    id,
    object: 'event',
    type: 'payment_intent.succeeded',
    created: Math.floor(Date.now() / 1000),
    data: { object: { id: `pi_${id}`, object: 'payment_intent', amount, amount_received: amount, metadata: { fb_purpose: 'topup', fb_customer_id: 'acme' }, ...extra } },
  });

  it('a signed but malformed event gets 400 VALIDATION_ERROR and changes nothing; a good one still applies once', async () => {
    const { ledger: l } = await setup();
    const before = await snapshot(l);
    const bad: unknown[] = [
      [1, 2, 3],
      null,
      'event',
      42,
      {},
      { id: 'evt_no_type' },
      { id: 'evt_no_data', object: 'event', type: 'payment_intent.succeeded' },
      { id: 'evt_null_object', type: 'payment_intent.succeeded', data: { object: null } },
      topUp('evt_fraction', 10.5),
      topUp('evt_negative', -100),
      topUp('evt_string', '1000'),
      topUp('evt_huge', 1e20),
      topUp('evt_meta', 1000, { metadata: { fb_purpose: 'topup', fb_customer_id: 7 } }),
      { id: 'evt_refund', type: 'charge.refunded', data: { object: { id: 'ch_1', payment_intent: 'pi_x', amount_refunded: 2.5 } } },
      { id: 'evt_cs', type: 'checkout.session.completed', data: { object: { id: 'cs_1', mode: 'payment', payment_status: 'paid', amount_total: '500', metadata: {} } } },
      { id: 'evt_sub', type: 'customer.subscription.updated', data: { object: { id: 'sub_1', customer: 12, status: 'active' } } },
    ];
    for (const event of bad) {
      const r = await post(JSON.stringify(event));
      const body = (await r.json()) as { received: boolean; code: string; error: string };
      expect([r.status, body.received, body.code], JSON.stringify(event)).toEqual([400, false, 'VALIDATION_ERROR']);
      expect(body.error).toMatch(/Malformed Stripe event/);
    }
    expect(await snapshot(l)).toEqual(before);
    expect(log.filter((line) => /refused \(400 VALIDATION_ERROR\)/.test(line))).toHaveLength(bad.length);
    const good = topUp('evt_good', 1234);
    for (let i = 0; i < 2; i++) expect((await post(JSON.stringify(good))).status).toBe(200);
    expect((await l.balance('acme')).balance - before.balance.balance).toBe(123_400_000_000n / 10n);
  });

  it('a signed, well-shaped event with a value the ledger refuses gets 400 VALIDATION_ERROR (not a 500 Stripe resends for days) and changes nothing', async () => {
    const { ledger: l } = await setup();
    const before = await snapshot(l);
    for (const event of [topUp('evt_zero', 0), topUp('evt_bad_id', 1000, { metadata: { fb_purpose: 'topup', fb_customer_id: '<acme>' } })]) {
      const r = await post(JSON.stringify(event));
      const body = (await r.json()) as { received: boolean; code: string };
      expect([r.status, body.received, body.code], event.id).toEqual([400, false, 'VALIDATION_ERROR']);
    }
    expect(await snapshot(l)).toEqual(before);
    // The operator is told which event: the customer paid, so someone must look at it in Stripe.
    expect(log.filter((line) => /refused \(400 VALIDATION_ERROR\) \(event evt_(zero|bad_id), payment_intent\.succeeded\)/.test(line))).toHaveLength(2);
  });

  it('a paid top-up for a customer the ledger does not have yet is a 500 Stripe redelivers; once the customer exists it is credited once', async () => {
    const { ledger: l } = await setup();
    const event = topUp('evt_ghost', 2500, { metadata: { fb_purpose: 'topup', fb_customer_id: 'ghost' } });
    const r = await post(JSON.stringify(event));
    expect([r.status, ((await r.json()) as { code: string }).code]).toEqual([500, 'CUSTOMER_NOT_FOUND']);
    expect(log.some((line) => /evt_ghost/.test(line))).toBe(true);
    await l.createCustomer({ id: 'ghost' });
    for (let i = 0; i < 2; i++) expect((await post(JSON.stringify(event))).status).toBe(200);
    expect((await l.balance('ghost')).balance).toBe(25_000_000_000n);
  });

  it('another path or method, and a body over the limit, are refused with a typed body (code) like every other refusal', async () => {
    await setup();
    const base = new URL(hooks!.url);
    const wrong = [await fetch(hooks!.url), await fetch(`${base.origin}/other`, { method: 'POST', body: '{}' })];
    for (const r of wrong) expect([r.status, ((await r.json()) as { code: string }).code]).toEqual([404, 'NOT_FOUND']);
    const big = JSON.stringify(topUp('evt_big', 100, { padding: 'x'.repeat(1024 * 1024) }));
    const r = await post(big);
    const body = (await r.json()) as { code: string; error: string; details: { limitBytes: number } };
    expect([r.status, body.code, body.details.limitBytes]).toEqual([413, 'VALIDATION_ERROR', 1024 * 1024]);
    expect(body.error).toMatch(/1048576 bytes/);
  });

  it('every ignored event is acknowledged and logged with its reason', async () => {
    await setup();
    const unknown = { id: 'evt_unknown', object: 'event', type: 'radar.early_fraud_warning.created', data: { object: {} } };
    const notOurs = topUp('evt_not_ours', 500, { metadata: {} });
    const thin = { id: 'evt_thin', object: 'v2.core.event', type: 'v1.billing.meter.error_report_triggered', related_object: { id: 'mtr_1', type: 'billing.meter' } };
    const replies = [];
    for (const e of [unknown, notOurs, thin]) replies.push((await (await post(JSON.stringify(e))).json()) as { ignored: boolean; reason: string });
    expect(replies.map((r) => r.ignored)).toEqual([true, true, true]);
    expect(replies[0]!.reason).toMatch(/not handled/);
    expect(replies[1]!.reason).toMatch(/fb_purpose/);
    expect(replies[2]!.reason).toMatch(/mtr_1.*stripe reconcile/);
    expect(log.filter((l) => / ignored: /.test(l)).map((l) => l.split(' ')[1])).toEqual(['evt_unknown', 'evt_not_ours', 'evt_thin']);
    // A redelivery is logged too.
    await post(JSON.stringify(unknown));
    expect(log.at(-1)).toMatch(/evt_unknown .* ignored: already applied/);
  });

  it('closes idle sockets and caps connections', async () => {
    await setup({ idleTimeoutMs: 400, maxConnections: 3 });
    const open = (): Promise<{ socket: net.Socket; closed: Promise<number> }> =>
      new Promise((resolve, reject) => {
        const socket = net.connect(hooks!.port, '127.0.0.1');
        const started = Date.now();
        const closed = new Promise<number>((r) => socket.on('close', () => r(Date.now() - started)));
        socket.on('error', () => undefined);
        socket.once('connect', () => resolve({ socket, closed }));
        socket.once('error', reject);
      });
    const idle = await Promise.all([open(), open(), open()]);
    await new Promise((r) => setTimeout(r, 50));
    // Over the cap: dropped at once.
    const extra = await open();
    expect(await Promise.race([extra.closed, new Promise((r) => setTimeout(() => r('still open'), 300))])).not.toBe('still open');
    // The idle ones are closed after the idle timeout, not kept forever.
    const lifetimes = await Promise.all(idle.map((s) => s.closed));
    for (const ms of lifetimes) {
      expect(ms).toBeGreaterThanOrEqual(300);
      expect(ms).toBeLessThan(5_000);
    }
    // And the server still answers.
    expect((await post(JSON.stringify(topUp('evt_after', 100)))).status).toBe(200);
  });
});
