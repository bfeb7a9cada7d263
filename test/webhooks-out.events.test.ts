import { afterEach, describe, expect, it } from 'vitest';
import type { Ledger } from '../src/ledger/types';
import { parseUsd } from '../src/money';
import { failRecharge } from '../src/stripe/recharge';
import { openWithEvents } from '../src/webhooks/open';
import { admitFlowRun } from '../src/plugin/admit';
import { closeSharedLedgers } from '../src/plugin/ledgers';
import { BACKENDS } from './support/backends';

/** Events written in their cause's transaction, by the library (no serve running). */
describe.each(BACKENDS)('outbound events in the cause transaction on $name', (backend) => {
  const open: Array<{ close(): Promise<void> }> = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((o) => o.close()));
  });

  async function claimRecharge(ledger: Ledger, customerId: string, key: string) {
    await ledger.dialect.writeTransaction((c) =>
      c.run(
        `INSERT INTO billing_stripe_recharge (customer_id, enabled, threshold, amount_cents, currency, payment_method, retry_window_ms, retry_interval_ms,
           sequence, attempt, in_flight_key, in_flight_since, failing_since, last_attempt_at, last_error, last_payment_intent, updated_at)
         VALUES (?, 1, 0, 1000, 'usd', NULL, 0, 0, 1, 0, ?, 0, NULL, NULL, NULL, NULL, 0)
         ON CONFLICT (customer_id) DO UPDATE SET in_flight_key = excluded.in_flight_key`,
        [customerId, key],
      ),
    );
  }

  it('records recharge.failed once per failed attempt, with the failure', async () => {
    const s = await openWithEvents(await backend.freshTarget());
    open.push(s);
    await s.ledger.createCustomer({ id: 'r1' });
    await claimRecharge(s.ledger, 'r1', 'recharge:r1:1');
    await failRecharge(s.ledger, { customerId: 'r1', key: 'recharge:r1:1', paymentIntentId: 'pi_1', error: 'card_declined', now: Date.now() });
    await failRecharge(s.ledger, { customerId: 'r1', key: 'recharge:r1:1', paymentIntentId: 'pi_1', error: 'card_declined', now: Date.now() });
    const events = await s.webhooks.listEvents({ customerId: 'r1' });
    expect(events.map((e) => e.type)).toEqual(['recharge.failed']);
    expect(events[0]!.payload).toMatchObject({ type: 'recharge.failed', data: { customerId: 'r1', paymentIntentId: 'pi_1', error: 'card_declined' } });
  });

  it('never fails the cause when the webhook tables are missing', async () => {
    const target = await backend.freshTarget();
    const plain = await backend.open(target);
    open.push(plain);
    await plain.createCustomer({ id: 'r2' });
    await claimRecharge(plain, 'r2', 'k');
    await expect(failRecharge(plain, { customerId: 'r2', key: 'k', paymentIntentId: null, error: 'x', now: Date.now() })).resolves.toBeUndefined();
  });

  it('a balance crossing below its threshold fires balance.low once; refusals fire run.refused keyed by the request', async () => {
    const s = await openWithEvents(await backend.freshTarget());
    open.push(s);
    await s.ledger.createCustomer({ id: 'b1' });
    await s.ledger.topUp({ customerId: 'b1', amount: parseUsd('3'), idempotencyKey: 'p1' });
    // Default threshold $1: 3 → 1.50 stays above, 1.50 → 0.50 crosses, 0.50 → 0.25 is already below.
    await s.ledger.charge({ customerId: 'b1', amount: parseUsd('1.5'), idempotencyKey: 'c1' });
    await s.ledger.charge({ customerId: 'b1', amount: parseUsd('1'), idempotencyKey: 'c2' });
    await s.ledger.charge({ customerId: 'b1', amount: parseUsd('1'), idempotencyKey: 'c2' });
    await s.ledger.charge({ customerId: 'b1', amount: parseUsd('0.25'), idempotencyKey: 'c3' });
    await expect(s.ledger.hold({ customerId: 'b1', amount: parseUsd('5'), idempotencyKey: 'h1' })).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    await expect(s.ledger.hold({ customerId: 'b1', amount: parseUsd('5'), idempotencyKey: 'h1' })).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    const types = (await s.webhooks.listEvents({ customerId: 'b1' })).map((e) => e.type).reverse();
    expect(types).toEqual(['topup.succeeded', 'balance.low', 'run.refused']);
    expect((await s.ledger.checkInvariants()).ok).toBe(true);
  });

  it('budget.threshold and run.refused from quota admissions, each once', async () => {
    const s = await openWithEvents(await backend.freshTarget());
    open.push(s);
    await s.ledger.createCustomer({ id: 'q1' });
    await s.ledger.topUp({ customerId: 'q1', amount: parseUsd('100'), idempotencyKey: 'p' });
    await s.quota.subscribe({ customerId: 'q1', planId: 'free' });
    await s.quota.setBudget('q1', parseUsd('10'));
    await s.ledger.charge({ customerId: 'q1', amount: parseUsd('8'), idempotencyKey: 'spend' });
    await s.quota.admitRun({ customerId: 'q1', conversationId: 'a' });
    await s.quota.admitRun({ customerId: 'q1', conversationId: 'b' });
    await s.ledger.charge({ customerId: 'q1', amount: parseUsd('2'), idempotencyKey: 'spend-2' });
    await expect(s.quota.admitRun({ customerId: 'q1', conversationId: 'c' })).rejects.toMatchObject({ code: 'BUDGET_EXCEEDED' });
    const events = (await s.webhooks.listEvents({ customerId: 'q1' })).reverse();
    const budget = events.filter((e) => e.type === 'budget.threshold').map((e) => (e.payload.data as { threshold: number }).threshold);
    expect(budget).toEqual([75]);
    const refused = events.filter((e) => e.type === 'run.refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]!.payload.data).toMatchObject({ reason: 'BUDGET_EXCEEDED', conversationId: 'c' });
  });

  it('run.refused for a forged billing token inside a flow run (the plugin path)', async () => {
    const target = await backend.freshTarget();
    const s = await openWithEvents(target);
    open.push(s);
    open.push({ close: closeSharedLedgers });
    const out = await admitFlowRun({
      ledgerDatabase: target,
      identity: { source: 'billingToken', vars: { billingToken: 'forged.jwt.value' }, tokenSecret: 'x'.repeat(40) },
      conversationId: 'chat-1',
      runKey: 'msg-1',
      runFee: null,
      checkSessions: true,
      actor: 'node:test',
    });
    expect(out.ok).toBe(false);
    const events = await s.webhooks.listEvents();
    expect(events.map((e) => e.type)).toEqual(['run.refused']);
    expect(events[0]!.payload.data).toMatchObject({ reason: 'UNAUTHORIZED', runKey: 'msg-1', customerId: null });
    expect(JSON.stringify(events[0]!.payload)).not.toContain('forged.jwt.value');
  });

  it('run.refused when a guard’s funds check refuses (no ledger operation refused it), once per run', async () => {
    const target = await backend.freshTarget();
    const s = await openWithEvents(target);
    open.push(s);
    open.push({ close: closeSharedLedgers });
    await s.ledger.createCustomer({ id: 'g1' });
    await s.ledger.topUp({ customerId: 'g1', amount: parseUsd('0.005'), idempotencyKey: 'p' });
    const admit = () =>
      admitFlowRun({
        ledgerDatabase: target,
        identity: { source: 'fixed', fixedCustomerId: 'g1' },
        conversationId: 'chat-g',
        runKey: 'msg-g',
        runFee: { item: 'PrivateFlowRun', quantity: '1' },
        checkSessions: false,
        actor: 'node:test',
      });
    for (let i = 0; i < 2; i++) {
      const out = await admit();
      expect(out.ok ? null : out.refusal.code).toBe('INSUFFICIENT_FUNDS');
    }
    const refused = (await s.webhooks.listEvents({ customerId: 'g1' })).filter((e) => e.type === 'run.refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]!.payload.data).toMatchObject({ reason: 'INSUFFICIENT_FUNDS', runKey: 'msg-g', customerId: 'g1' });
  });
});
