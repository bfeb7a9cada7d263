import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { BillingError } from '../src/errors';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { formatUsd, parseUsd } from '../src/money';
import { periodContaining } from '../src/period';
import { type Alert, QuotaService } from '../src/quota/service';
import { BACKENDS } from './support/backends';

const T0 = Date.parse('2026-03-10T12:00:00Z');
const MIN = 60_000;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(BillingError);
    return (e as BillingError).code;
  }
  return 'OK';
}

describe('billing periods', () => {
  it('anchor on a day; short months clamp to their last day', () => {
    const p = periodContaining(Date.parse('2026-03-10T12:00:00Z'), 10);
    expect([new Date(p.start).toISOString(), new Date(p.end).toISOString()]).toEqual(['2026-03-10T00:00:00.000Z', '2026-04-10T00:00:00.000Z']);
    const q = periodContaining(Date.parse('2026-02-15T00:00:00Z'), 31);
    expect([new Date(q.start).toISOString(), new Date(q.end).toISOString()]).toEqual(['2026-01-31T00:00:00.000Z', '2026-02-28T00:00:00.000Z']);
    const r = periodContaining(Date.parse('2026-12-31T23:59:59Z'), 1);
    expect(new Date(r.end).toISOString()).toBe('2027-01-01T00:00:00.000Z');
    expect(() => periodContaining(0, 0)).toThrow(RangeError);
  });
});

describe.each(BACKENDS)('plans, sessions and quotas on $name', (backend) => {
  let ledger: SqlLedger;
  let quota: QuotaService;
  let now = T0;
  let alerts: Alert[] = [];
  let target: string;
  const opened: SqlLedger[] = [];

  beforeEach(async () => {
    now = T0;
    alerts = [];
    target = await backend.freshTarget();
    ledger = await backend.open(target, { clock: () => now });
    opened.push(ledger);
    quota = new QuotaService(ledger, { onAlert: (a) => void alerts.push(a) });
    await ledger.createCustomer({ id: 'acme' });
  });
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });

  const touch = (conv: string, at = now) => quota.admitRun({ customerId: 'acme', conversationId: conv, at: new Date(at) });

  it('ships the four default tiers', async () => {
    const plans = await quota.listPlans();
    expect(plans.map((p) => [p.id, p.sessionsIncluded, formatUsd(p.basePrice), p.managedModels])).toEqual([
      ['free', 25, '0.00', false],
      ['starter', 1000, '29.00', true],
      ['professional', 10000, '99.00', true],
      ['enterprise', 100000, '499.00', true],
    ]);
  });

  it('session boundaries: 29:59 of inactivity continues, 30:01 starts a new session', async () => {
    const a = await touch('c1');
    expect(a).toMatchObject({ session: 'new', tier: 'free', sessionsUsed: 1, sessionsLimit: 25, sessionsRemaining: 24, managedModels: false });
    const b = await touch('c1', now + 29 * MIN + 59_000);
    expect(b).toMatchObject({ session: 'existing', sessionId: a.sessionId, sessionsUsed: 1 });
    // Inactivity counts from the last message, not the first.
    const c = await touch('c1', now + 29 * MIN + 59_000 + 29 * MIN);
    expect(c.session).toBe('existing');
    const d = await touch('c1', now + 29 * MIN + 59_000 + 29 * MIN + 30 * MIN + 1_000);
    expect(d).toMatchObject({ session: 'new', sessionsUsed: 2 });
    expect(d.sessionId).not.toBe(a.sessionId);
  });

  it('a session spanning a period boundary counts once, in the period it started', async () => {
    await quota.subscribe({ customerId: 'acme', planId: 'starter', anchorDay: 1, at: new Date(now) });
    const endOfMarch = Date.parse('2026-04-01T00:00:00Z');
    const first = await touch('late', endOfMarch - 10 * MIN);
    expect(first).toMatchObject({ session: 'new', sessionsUsed: 1, periodStart: '2026-03-01T00:00:00.000Z' });
    now = endOfMarch + 10 * MIN;
    const cont = await touch('late', now);
    expect(cont).toMatchObject({ session: 'existing', sessionsUsed: 0, periodStart: '2026-04-01T00:00:00.000Z' });
    const march = await quota.usage('acme', { at: new Date(endOfMarch - MIN) });
    const april = await quota.usage('acme');
    expect([march.sessionsUsed, april.sessionsUsed]).toEqual([1, 0]);
  });

  it('quota: a new session is refused when used up, a session in progress may finish, the next period resets', async () => {
    await quota.updatePlan('free', { sessionsIncluded: 3 });
    for (const conv of ['a', 'b', 'c']) expect((await touch(conv)).session).toBe('new');
    const before = await quota.usage('acme');
    let err: BillingError | undefined;
    try {
      await touch('d');
    } catch (e) {
      err = e as BillingError;
    }
    expect(err?.code).toBe('QUOTA_EXCEEDED');
    expect(err?.details).toMatchObject({ customerId: 'acme', sessionsUsed: 3, sessionsLimit: 3, periodEnd: '2026-04-10T00:00:00.000Z' });
    expect(await quota.usage('acme')).toEqual(before);
    // Graceful degradation: conversation "b" is still in its session.
    expect((await touch('b', now + 5 * MIN)).session).toBe('existing');
    const report = await quota.usage('acme');
    expect(report).toMatchObject({ sessionsUsed: 3, sessionsRemaining: 0, usagePercentage: 100, isNearLimit: true, canMakeRequests: false });
    // A new period resets the quota.
    now = Date.parse('2026-04-10T00:00:00Z');
    expect(await touch('d')).toMatchObject({ session: 'new', sessionsUsed: 1, periodStart: '2026-04-10T00:00:00.000Z' });
  });

  it('upgrades take effect immediately, downgrades at the next period, cancellation at period end', async () => {
    await quota.updatePlan('free', { sessionsIncluded: 2 });
    await touch('a');
    await touch('b');
    expect(await code(touch('c'))).toBe('QUOTA_EXCEEDED');
    const up = await quota.subscribe({ customerId: 'acme', planId: 'starter' });
    expect(up.change).toBe('upgrade');
    expect(await touch('c')).toMatchObject({ session: 'new', tier: 'starter', sessionsUsed: 3, sessionsRemaining: 997 });

    const down = await quota.subscribe({ customerId: 'acme', planId: 'free' });
    expect(down).toMatchObject({ change: 'downgrade', subscription: { planId: 'starter', pendingPlanId: 'free' } });
    expect((await touch('d')).tier).toBe('starter');
    now = Date.parse('2026-04-10T00:00:01Z');
    expect(await touch('e')).toMatchObject({ tier: 'free', sessionsUsed: 1 });

    await quota.subscribe({ customerId: 'acme', planId: 'professional' });
    const cancelled = await quota.cancel('acme');
    expect(cancelled).toMatchObject({ cancelAtPeriodEnd: true, status: 'active' });
    expect((await touch('f')).tier).toBe('professional');
    now = Date.parse('2026-05-10T00:00:00Z');
    expect(await code(touch('g'))).toBe('SUBSCRIPTION_INACTIVE');
    expect((await quota.getSubscription('acme'))?.status).toBe('canceled');
  });

  it('a canceled subscription is invoiced up to its last period, never after', async () => {
    await quota.subscribe({ customerId: 'acme', planId: 'starter' });
    await quota.cancel('acme');
    now = Date.parse('2026-07-20T00:00:00Z');
    const last = await quota.closeInvoice('acme');
    expect(last.periodStart).toBe('2026-03-10T00:00:00.000Z');
    expect((await quota.invoices('acme')).map((i) => [i.periodStart, formatUsd(i.total)])).toEqual([['2026-03-10T00:00:00.000Z', '29.00']]);
    // The preview of a canceled period says what will be invoiced for it: nothing.
    expect(await quota.previewInvoice('acme')).toMatchObject({ periodStart: '2026-07-10T00:00:00.000Z', base: 0n, total: 0n });
  });

  it('re-subscribing after a cancellation: a cheaper plan withdraws a pending cancellation, and reactivates a canceled subscription now', async () => {
    await quota.subscribe({ customerId: 'acme', planId: 'professional' });
    await quota.cancel('acme');
    const down = await quota.subscribe({ customerId: 'acme', planId: 'starter' });
    expect(down).toMatchObject({ change: 'downgrade', subscription: { pendingPlanId: 'starter', cancelAtPeriodEnd: false } });
    now = Date.parse('2026-04-10T00:00:01Z');
    expect((await touch('a')).tier).toBe('starter');

    await quota.cancel('acme');
    now = Date.parse('2026-05-10T00:00:01Z');
    expect(await code(touch('b'))).toBe('SUBSCRIPTION_INACTIVE');
    const again = await quota.subscribe({ customerId: 'acme', planId: 'free' });
    expect(again).toMatchObject({ change: 'new', subscription: { planId: 'free', status: 'active', pendingPlanId: null } });
    expect((await touch('b')).tier).toBe('free');
  });

  it('a message dated before the current period is refused (that period is closed), and counts nowhere', async () => {
    await quota.subscribe({ customerId: 'acme', planId: 'starter' });
    now = Date.parse('2026-04-12T00:00:00Z');
    expect(await touch('a')).toMatchObject({ session: 'new', sessionsUsed: 1 });
    const before = (await quota.usage('acme')).sessionsUsed;
    const e = await touch('b', Date.parse('2026-03-20T00:00:00Z')).catch((x: unknown) => x);
    expect(e).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'at', periodStart: '2026-04-10T00:00:00.000Z' } });
    expect((await quota.usage('acme')).sessionsUsed).toBe(before);
    // Within the period, an earlier time than the last message is still a message of this period.
    expect(await touch('b', Date.parse('2026-04-11T00:00:00Z'))).toMatchObject({ session: 'new', sessionsUsed: 2 });
  });

  it('budget: steps that would exceed the monthly budget are refused with BUDGET_EXCEEDED', async () => {
    await ledger.topUp({ customerId: 'acme', amount: parseUsd('100'), idempotencyKey: 't' });
    await quota.subscribe({ customerId: 'acme', planId: 'starter', anchorDay: 10 });
    await quota.setBudget('acme', parseUsd('1'));
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.6'), idempotencyKey: 'c1' });
    const h = await ledger.hold({ customerId: 'acme', amount: parseUsd('0.3'), idempotencyKey: 'h1' });
    expect(await code(ledger.hold({ customerId: 'acme', amount: parseUsd('0.11'), idempotencyKey: 'h2' }))).toBe('BUDGET_EXCEEDED');
    expect(await code(ledger.charge({ customerId: 'acme', amount: parseUsd('0.11'), idempotencyKey: 'c2' }))).toBe('BUDGET_EXCEEDED');
    await ledger.settle({ holdId: h.id, amount: parseUsd('0.3'), idempotencyKey: 's1' });
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.1'), idempotencyKey: 'c3' });
    expect(await ledger.budget('acme')).toMatchObject({ budget: parseUsd('1'), spent: parseUsd('1'), held: 0n });
    // The budget is used up: even starting a run is refused, distinctly from the session quota.
    expect(await code(touch('x'))).toBe('BUDGET_EXCEEDED');
    // A refund gives budget back; the next period starts fresh.
    const c1 = (await ledger.statement('acme')).find((e) => e.idempotencyKey === 'c1')!;
    await ledger.refund({ chargeId: c1.chargeId!, amount: parseUsd('0.2'), idempotencyKey: 'r1' });
    expect((await ledger.budget('acme')).spent).toBe(parseUsd('0.8'));
    now = Date.parse('2026-04-10T00:00:00Z');
    expect((await ledger.budget('acme')).spent).toBe(0n);
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.9'), idempotencyKey: 'c4' });
    expect((await ledger.balance('acme')).balance).toBe(parseUsd('98.3'));
    // Clearing the budget lifts the cap.
    await quota.setBudget('acme', null);
    await ledger.charge({ customerId: 'acme', amount: parseUsd('5'), idempotencyKey: 'c5' });
  });

  it('alerts fire exactly once per threshold per period', async () => {
    await quota.updatePlan('free', { sessionsIncluded: 20 });
    for (let i = 0; i < 20; i++) await touch(`conv-${i}`);
    // 15/20 = 75 %, 18/20 = 90 %, 19/20 = 95 %
    expect(alerts.map((a) => [a.kind, a.threshold, a.value])).toEqual([
      ['sessions', 75, '75.00'],
      ['sessions', 90, '90.00'],
      ['sessions', 95, '95.00'],
    ]);
    for (let i = 0; i < 5; i++) await touch(`conv-${i}`, now + MIN);
    expect(alerts).toHaveLength(3);
    expect((await quota.usage('acme')).alerts).toHaveLength(3);
    // Budget alerts, and a new period fires again.
    await ledger.topUp({ customerId: 'acme', amount: parseUsd('10'), idempotencyKey: 't' });
    await quota.setBudget('acme', parseUsd('1'));
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.8'), idempotencyKey: 'c' });
    await touch('conv-1', now + 2 * MIN);
    expect(alerts.slice(3).map((a) => [a.kind, a.threshold])).toEqual([['budget', 75]]);
    await touch('conv-1', now + 3 * MIN);
    expect(alerts).toHaveLength(4);
    now = Date.parse('2026-04-10T00:00:00Z');
    await quota.updatePlan('free', { sessionsIncluded: 1 });
    await touch('next');
    expect(alerts.slice(4).map((a) => [a.kind, a.threshold, a.periodStart])).toEqual([
      ['sessions', 75, '2026-04-10T00:00:00.000Z'],
      ['sessions', 90, '2026-04-10T00:00:00.000Z'],
      ['sessions', 95, '2026-04-10T00:00:00.000Z'],
    ]);
  });

  it('the reference invoice: base $100, 12,000 API calls, 10,000 included, $0.01 overage → $120', async () => {
    await quota.createPlan({
      id: 'api-pro',
      name: 'API Pro',
      basePriceUsd: '100',
      sessionsIncluded: null,
      managedModels: true,
      metrics: { api_calls: { included: '10000', overageUsd: '0.01', unit: 'call' } },
    });
    await quota.subscribe({ customerId: 'acme', planId: 'api-pro', anchorDay: 1 });
    await quota.recordUsage({ customerId: 'acme', metric: 'api_calls', quantity: 7000, idempotencyKey: 'batch-1' });
    await quota.recordUsage({ customerId: 'acme', metric: 'api_calls', quantity: 5000, idempotencyKey: 'batch-2' });
    expect(await quota.recordUsage({ customerId: 'acme', metric: 'api_calls', quantity: 5000, idempotencyKey: 'batch-2' })).toEqual({ recorded: false });
    expect(await code(quota.recordUsage({ customerId: 'acme', metric: 'api_calls', quantity: 5001, idempotencyKey: 'batch-2' }))).toBe('IDEMPOTENCY_CONFLICT');
    const preview = await quota.previewInvoice('acme');
    expect(formatUsd(preview.total)).toBe('120.00');
    expect(preview.lines).toEqual([expect.objectContaining({ metric: 'api_calls', used: '12000', included: '10000', overage: '2000', amount: parseUsd('20') })]);
    expect(await code(quota.closeInvoice('acme'))).toBe('VALIDATION_ERROR');
    now = Date.parse('2026-04-01T00:00:00Z');
    const closed = await quota.closeInvoice('acme');
    expect(closed).toMatchObject({ total: parseUsd('120'), periodStart: '2026-03-01T00:00:00.000Z', planId: 'api-pro' });
    expect(closed.id).toMatch(/^inv_/);
    // Immutable: later usage and plan edits do not change it.
    await quota.recordUsage({ customerId: 'acme', metric: 'api_calls', quantity: 1, idempotencyKey: 'late', at: new Date(Date.parse('2026-03-31T00:00:00Z')) });
    await quota.updatePlan('api-pro', { basePriceUsd: '200' });
    expect(await quota.closeInvoice('acme')).toEqual(closed);
    expect(await quota.invoices('acme')).toEqual([closed]);
  });

  it('usage report fields', async () => {
    await ledger.topUp({ customerId: 'acme', amount: parseUsd('5'), idempotencyKey: 't' });
    await quota.subscribe({ customerId: 'acme', planId: 'starter' });
    await touch('one');
    await ledger.charge({ customerId: 'acme', amount: parseUsd('0.25'), idempotencyKey: 'c', chargeType: 'Inference', quantity: '12' });
    const r = await quota.usage('acme');
    expect(r).toMatchObject({
      tier: 'starter', sessionsUsed: 1, sessionsLimit: 1000, sessionsRemaining: 999, usagePercentage: 0.1, isNearLimit: false, canMakeRequests: true,
      base: parseUsd('29'), overage: 0n, usageCharges: parseUsd('0.25'), currentCharges: parseUsd('29.25'), balance: parseUsd('4.75'),
      periodStart: '2026-03-10T00:00:00.000Z', periodEnd: '2026-04-10T00:00:00.000Z',
    });
  });

  it('rejects bad input and unknown things, changing nothing', async () => {
    expect(await code(quota.subscribe({ customerId: 'acme', planId: 'nope' }))).toBe('PLAN_NOT_FOUND');
    expect(await code(quota.subscribe({ customerId: 'ghost', planId: 'free' }))).toBe('CUSTOMER_NOT_FOUND');
    expect(await code(quota.subscribe({ customerId: 'acme', planId: 'Bad Id' }))).toBe('VALIDATION_ERROR');
    expect(await code(quota.createPlan({ id: 'x', name: 'X', basePriceUsd: '-1', sessionsIncluded: 1, managedModels: true }))).toBe('VALIDATION_ERROR');
    expect(await code(quota.updatePlan('free', { sessionsIncluded: -1 }))).toBe('VALIDATION_ERROR');
    expect(await code(quota.createPlan({ id: 'free', name: 'Again', basePriceUsd: '0', sessionsIncluded: 1, managedModels: true }))).toBe('VALIDATION_ERROR');
    expect(await code(touch(''))).toBe('VALIDATION_ERROR');
    // An unknown customer is an error, not a customer with no alerts or invoices.
    expect(await code(quota.alerts('ghost'))).toBe('CUSTOMER_NOT_FOUND');
    expect(await code(quota.invoices('ghost'))).toBe('CUSTOMER_NOT_FOUND');
    expect(await quota.getSubscription('acme')).toBeNull();
    expect((await quota.getPlan('free')).sessionsIncluded).toBe(25);
  });

  it('plan names refuse control characters; a plan an older release stored with one stays readable and editable', async () => {
    for (const name of ['Pro\nPlan', 'Tab\there', 'Red\u001b[31m', 'Del\u007f']) {
      expect(await code(quota.createPlan({ id: 'ctl', name, basePriceUsd: '1', sessionsIncluded: 1, managedModels: true })), JSON.stringify(name)).toBe('VALIDATION_ERROR');
      expect(await code(quota.updatePlan('starter', { name })), JSON.stringify(name)).toBe('VALIDATION_ERROR');
    }
    expect((await quota.listPlans()).map((p) => p.id)).not.toContain('ctl');
    const starter = await quota.getPlan('starter');
    expect(starter.name).toBe('Starter');
    // As an older release could have written it.
    await ledger.dialect.writeTransaction((c) => c.run('UPDATE billing_plans SET document = ? WHERE id = ?', [JSON.stringify({ ...starter.document, name: 'Old\nName' }), 'starter']));
    expect((await quota.getPlan('starter')).name).toBe('Old\nName');
    expect((await quota.listPlans()).find((p) => p.id === 'starter')?.name).toBe('Old\nName');
    expect((await quota.updatePlan('starter', { sessionsIncluded: 5 })).sessionsIncluded).toBe(5);
    expect((await quota.updatePlan('starter', { name: 'Starter' })).name).toBe('Starter');
  });

  it('concurrency: two first messages of one conversation are one session; at limit − 1, 100 new conversations admit exactly one', async () => {
    const both = await Promise.all([touch('same'), touch('same')]);
    expect(both.map((b) => b.session).sort()).toEqual(['existing', 'new']);
    expect(both[0].sessionId).toBe(both[1].sessionId);

    await quota.updatePlan('free', { sessionsIncluded: 10 });
    for (let i = 0; i < 8; i++) await touch(`pre-${i}`);
    const results = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => touch(`race-${i}`)));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected' && (r.reason as BillingError).code === 'QUOTA_EXCEEDED')).toHaveLength(99);
    expect((await quota.usage('acme')).sessionsUsed).toBe(10);
  });
});
