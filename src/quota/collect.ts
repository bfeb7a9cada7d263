import { BillingError } from '../errors';
import type { Invoice, QuotaService } from './service';

/** The ChargeType of an invoice collection on the statement (not usage: the Stripe meter skips it). */
export const INVOICE_CHARGE_TYPE = 'InvoiceCollection';

export interface Collection {
  readonly invoiceId: string;
  readonly periodStart: string;
  /** collected: charged now or earlier (same charge); nothing_due: total 0; unpaid: the credits did not cover it, retried on the next close. */
  readonly status: 'collected' | 'nothing_due' | 'unpaid';
  readonly chargeId: string | null;
  readonly error: { code: string; message: string } | null;
}

/** The ledger key of a period's collection: one per customer and period, whoever closes it and however often. */
function collectionKey(inv: Invoice): string {
  return `invoice:${inv.customerId}:${inv.periodStart}`;
}

/**
 * Charges every closed invoice's total (base price + overage) to the
 * customer's credits, once per period: the ledger key is the customer and
 * period, so closing again, or two closers at once, charge once. An invoice
 * the credits cannot cover stays unpaid and is tried again next time.
 */
export async function collectInvoices(quota: QuotaService, customerId: string, actor = 'invoicing'): Promise<Collection[]> {
  const out: Collection[] = [];
  for (const inv of await quota.invoices(customerId)) {
    if (inv.total === 0n) {
      out.push({ invoiceId: inv.id!, periodStart: inv.periodStart, status: 'nothing_due', chargeId: null, error: null });
      continue;
    }
    try {
      const ch = await quota.ledger.charge({
        customerId,
        amount: inv.total,
        chargeType: INVOICE_CHARGE_TYPE,
        idempotencyKey: collectionKey(inv),
        metadata: { invoiceId: inv.id, periodStart: inv.periodStart, periodEnd: inv.periodEnd, planId: inv.planId },
        actor,
      });
      out.push({ invoiceId: inv.id!, periodStart: inv.periodStart, status: 'collected', chargeId: ch.id, error: null });
    } catch (e) {
      if (!(e instanceof BillingError) || (e.code !== 'INSUFFICIENT_FUNDS' && e.code !== 'BUDGET_EXCEEDED')) throw e;
      out.push({ invoiceId: inv.id!, periodStart: inv.periodStart, status: 'unpaid', chargeId: null, error: { code: e.code, message: e.message } });
    }
  }
  return out;
}
