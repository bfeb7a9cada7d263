import { afterEach, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { collectInvoices, INVOICE_CHARGE_TYPE } from '../src/quota/collect';
import { QuotaService } from '../src/quota/service';
import { BACKENDS } from './support/backends';

/**
 * Closing a period collects it: base price + overage charged to the credits
 * once per customer and period, on the statement, whoever closes it and
 * however often; an invoice the credits cannot cover stays unpaid until they can.
 */
describe.each(BACKENDS)('invoice collection on $name', (backend) => {
  let ledger: SqlLedger | undefined;
  afterEach(async () => {
    await ledger?.close();
    ledger = undefined;
  });

  async function setup() {
    let now = Date.parse('2026-03-10T12:00:00Z');
    const clock = () => now;
    ledger = await backend.open(await backend.freshTarget(), { clock });
    const quota = new QuotaService(ledger, { clock });
    await quota.createPlan({ id: 'metered', name: 'Metered', basePriceUsd: '29', sessionsIncluded: 1000, managedModels: true, metrics: { Inference: { included: '10', overageUsd: '0.5' } } });
    return { quota, l: ledger, advance: (ms: number) => (now += ms) };
  }

  it('charges base + overage once per period, visibly, even when closed twice or concurrently', async () => {
    const { quota, l, advance } = await setup();
    await l.createCustomer({ id: 'acme' });
    await l.topUp({ customerId: 'acme', amount: parseUsd('100'), idempotencyKey: 'pay-1' });
    await quota.subscribe({ customerId: 'acme', planId: 'metered' });
    // 14 Inference units: 4 over the 10 included at $0.50 → $2 overage (usage itself is paid when charged).
    await l.charge({ customerId: 'acme', amount: parseUsd('0.28'), chargeType: 'Inference', quantity: '14', idempotencyKey: 'run-1' });
    advance(40 * 86_400_000);
    const inv = await quota.closeInvoice('acme');
    expect(inv.total).toBe(parseUsd('31'));

    const [a, b] = await Promise.all([collectInvoices(quota, 'acme'), collectInvoices(quota, 'acme')]);
    expect(a).toEqual(b);
    expect(a).toHaveLength(1);
    expect(a[0]).toMatchObject({ status: 'collected', invoiceId: inv.id });
    await quota.closeInvoice('acme');
    const again = await collectInvoices(quota, 'acme');
    expect(again[0]!.chargeId).toBe(a[0]!.chargeId);

    expect((await l.balance('acme')).balance).toBe(parseUsd('100') - parseUsd('0.28') - parseUsd('31'));
    const collected = (await l.statement('acme')).filter((e) => e.chargeType === INVOICE_CHARGE_TYPE);
    expect(collected).toHaveLength(1);
    expect(collected[0]!.amount).toBe(-parseUsd('31'));
    expect((await l.getCharge(a[0]!.chargeId!)).metadata).toMatchObject({ invoiceId: inv.id, periodStart: inv.periodStart });
    // The collection pays the closed period; it is not usage of the period it happens in.
    const usage = await quota.usage('acme');
    expect(usage.usageCharges).toBe(0n);
    expect(usage.currentCharges).toBe(parseUsd('29'));
    expect((await quota.previewInvoice('acme')).prepaidUsage).toBe(0n);
    expect((await l.checkInvariants()).ok).toBe(true);
  });

  it('leaves an invoice the credits cannot cover unpaid, and collects it after a top-up', async () => {
    const { quota, l, advance } = await setup();
    await l.createCustomer({ id: 'poor' });
    await l.topUp({ customerId: 'poor', amount: parseUsd('5'), idempotencyKey: 'pay-p' });
    await quota.subscribe({ customerId: 'poor', planId: 'metered' });
    advance(40 * 86_400_000);
    await quota.closeInvoice('poor');
    const unpaid = await collectInvoices(quota, 'poor');
    expect(unpaid[0]).toMatchObject({ status: 'unpaid', chargeId: null, error: { code: 'INSUFFICIENT_FUNDS' } });
    expect((await l.balance('poor')).balance).toBe(parseUsd('5'));
    await l.topUp({ customerId: 'poor', amount: parseUsd('50'), idempotencyKey: 'pay-p2' });
    const paid = await collectInvoices(quota, 'poor');
    expect(paid[0]!.status).toBe('collected');
    expect((await l.balance('poor')).balance).toBe(parseUsd('26'));
  });

  it('has nothing to collect on a free period', async () => {
    const { quota, l, advance } = await setup();
    await l.createCustomer({ id: 'free-rider' });
    await quota.subscribe({ customerId: 'free-rider', planId: 'free' });
    advance(40 * 86_400_000);
    await quota.closeInvoice('free-rider');
    expect((await collectInvoices(quota, 'free-rider'))[0]!.status).toBe('nothing_due');
    expect(await l.statement('free-rider')).toEqual([]);
  });
});
