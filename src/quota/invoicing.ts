import { randomUUID } from 'node:crypto';
import { ValidationError } from '../errors';
import type { SqlConnection } from '../ledger/dialect';
import { iso } from '../ledger/rows';
import { formatUsd } from '../money';
import type { Period } from '../period';
import type { QuotaCore } from './core';
import { allInvoices, decodeInvoice, encodeInvoice, invoiceClosed, invoiceFor, latestInvoice, storeInvoice } from './invoices';
import type { SubRow } from './subscription-rows';
import type { Invoice } from './types';

/** Invoices: each ended period closed once into an immutable record, and the current one previewed. */

/** Closes the period's invoice once (an immutable record); the first close wins. */
export async function closeInvoiceIn(q: QuotaCore, c: SqlConnection, sub: SubRow, period: Period): Promise<void> {
  if (await invoiceClosed(c, sub.customerId, period.start)) return;
  const inv = await invoiceFor(c, q.ledger.view(c), sub.customerId, await q.planIn(c, sub.planId), period);
  const id = `inv_${randomUUID().replace(/-/g, '')}`;
  const closedAt = q.clock();
  const doc = encodeInvoice({ ...inv, id, closedAt: iso(closedAt) });
  await storeInvoice(c, { id, customerId: sub.customerId, period, planId: sub.planId, total: inv.total, document: doc, closedAt });
  await q.audit(c, 'closeInvoice', sub.customerId, { invoiceId: id, totalUsd: formatUsd(inv.total), periodStart: iso(period.start) });
  await q.opts.inTransaction?.(c, { kind: 'invoiceClosed', invoice: decodeInvoice(doc) });
}

/** The current period's invoice so far (nothing recorded). */
export async function previewInvoice(q: QuotaCore, customerId: string): Promise<Invoice> {
  await q.ensurePlans();
  return q.write(async (c) => {
    const sub = await q.requireSub(c, customerId);
    await q.roll(c, sub, q.clock());
    await q.saveSub(c, sub, false);
    const inv = await invoiceFor(c, q.ledger.view(c), customerId, await q.planIn(c, sub.planId), { start: sub.periodStart, end: sub.periodEnd });
    // A canceled subscription's period is never invoiced (the roll closes none): nothing is due for it,
    // whatever its plan's base price (the usage is still shown).
    if (sub.status === 'canceled') return { ...inv, base: 0n, overage: 0n, total: 0n, lines: inv.lines.map((l) => ({ ...l, amount: 0n })) };
    return inv;
  });
}

/**
 * Closes every ended period (an immutable record each) and returns the most
 * recent closed invoice. Closing again returns the same record.
 */
export async function closeInvoice(q: QuotaCore, customerId: string): Promise<Invoice> {
  await q.ensurePlans();
  return q.write(async (c) => {
    const sub = await q.requireSub(c, customerId);
    await q.roll(c, sub, q.clock());
    await q.saveSub(c, sub, false);
    const latest = await latestInvoice(c, customerId);
    if (!latest) {
      throw new ValidationError(`No billing period of ${customerId} has ended yet; the current one ends ${iso(sub.periodEnd)} (see invoice preview)`, {
        customerId,
        periodEnd: iso(sub.periodEnd),
      });
    }
    return latest;
  });
}

export async function invoices(q: QuotaCore, customerId: string): Promise<Invoice[]> {
  return q.d.read(async (c) => {
    await q.requireCustomer(c, customerId);
    return allInvoices(c, customerId);
  });
}
