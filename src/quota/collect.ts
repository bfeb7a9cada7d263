import { BillingError } from '../errors';
import type { SqlConnection } from '../ledger/dialect';
import type { Invoice, QuotaService } from './service';

/** The ChargeType of an invoice collection on the statement (not usage: the Stripe meter skips it). */
export const INVOICE_CHARGE_TYPE = 'InvoiceCollection';

/** Where a closed period's total goes: the customer's credits, or an outside biller (Stripe invoice items). */
export type CollectionMethod = 'credits' | 'stripe';

/** One item queued with an outside biller, and how far its delivery got. */
export interface ExternalItem {
  readonly id: string;
  /** `base` (the plan's base price) or `overage`. */
  readonly kind: string;
  readonly amount: bigint;
  readonly status: 'pending' | 'delivered' | 'failed';
  readonly attempts: number;
  readonly lastError: string | null;
  /** The biller's id once delivered (e.g. Stripe's `ii_…`). */
  readonly externalId: string | null;
}

/**
 * An outside biller that closed invoices can be collected through instead of
 * the credits (implemented by src/stripe/invoice-items.ts; quota never
 * imports an adapter). `enabled` and `enqueue` run inside the transaction that
 * claims the period, so the claim and the queued items commit together.
 */
export interface ExternalCollector {
  readonly method: Exclude<CollectionMethod, 'credits'>;
  /** Whether periods not collected yet go to this biller (its configuration, read in the claiming transaction). */
  enabled(c: SqlConnection): Promise<boolean>;
  /** Queues the invoice's items, idempotently (a second call for the same period adds nothing). */
  enqueue(c: SqlConnection, invoice: Invoice, now: number): Promise<void>;
  /** The queued items of a customer's periods, keyed by period start (epoch ms). */
  items(c: SqlConnection, customerId: string): Promise<Map<number, ExternalItem[]>>;
}

export interface Collection {
  readonly invoiceId: string;
  readonly periodStart: string;
  readonly method: CollectionMethod;
  /**
   * collected: charged to the credits now or earlier (same charge); nothing_due: total 0;
   * unpaid: the credits did not cover it, retried on the next close;
   * invoiced: queued as Stripe invoice items (see `items` for their delivery).
   */
  readonly status: 'collected' | 'nothing_due' | 'unpaid' | 'invoiced';
  readonly chargeId: string | null;
  readonly error: { code: string; message: string } | null;
  /** For `invoiced`: the items and their delivery status. */
  readonly items?: readonly ExternalItem[];
}

/** The ledger key of a period's collection: one per customer and period, whoever closes it and however often. */
function collectionKey(inv: Invoice): string {
  return `invoice:${inv.customerId}:${inv.periodStart}`;
}

/**
 * Claims how a period is collected: the first collection's method is kept for
 * good (a primary key per customer and period), so turning Stripe on or off
 * later never collects a period twice, once each way. With an outside biller
 * chosen, its items are queued in the same transaction as the claim.
 */
async function claim(quota: QuotaService, inv: Invoice, external: ExternalCollector | undefined): Promise<CollectionMethod> {
  const d = quota.ledger.dialect;
  const start = Date.parse(inv.periodStart);
  const now = quota.ledger.now();
  return d.writeTransaction(async (c) => {
    const wanted: CollectionMethod = external && (await external.enabled(c)) ? external.method : 'credits';
    await c.run('INSERT INTO billing_invoice_collections (customer_id, period_start, invoice_id, method, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING', [
      inv.customerId,
      start,
      inv.id,
      wanted,
      now,
    ]);
    const [row] = await c.query('SELECT method FROM billing_invoice_collections WHERE customer_id = ? AND period_start = ?', [inv.customerId, start]);
    const method = String(row!.method) as CollectionMethod;
    if (method !== 'credits' && external?.method === method) await external.enqueue(c, inv, now);
    return method;
  });
}

/**
 * Collects every closed invoice's total (base price + overage) once per
 * period. By default it is charged to the customer's credits (ledger key: the
 * customer and period, so closing again, or two closers at once, charge once;
 * an invoice the credits cannot cover stays unpaid and is tried again next
 * time). When `external` (Stripe invoice items) is configured, periods not
 * collected yet are queued there instead, durably and once.
 */
export async function collectInvoices(
  quota: QuotaService,
  customerId: string,
  actor = 'invoicing',
  opts: { external?: ExternalCollector } = {},
): Promise<Collection[]> {
  const out: Collection[] = [];
  const queued: Collection[] = [];
  for (const inv of await quota.invoices(customerId)) {
    const base = { invoiceId: inv.id!, periodStart: inv.periodStart };
    if (inv.total === 0n) {
      out.push({ ...base, method: 'credits', status: 'nothing_due', chargeId: null, error: null });
      continue;
    }
    const method = await claim(quota, inv, opts.external);
    if (method !== 'credits') {
      const c: Collection = { ...base, method, status: 'invoiced', chargeId: null, error: null };
      out.push(c);
      queued.push(c);
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
      out.push({ ...base, method, status: 'collected', chargeId: ch.id, error: null });
    } catch (e) {
      if (!(e instanceof BillingError) || (e.code !== 'INSUFFICIENT_FUNDS' && e.code !== 'BUDGET_EXCEEDED')) throw e;
      out.push({ ...base, method, status: 'unpaid', chargeId: null, error: { code: e.code, message: e.message } });
    }
  }
  if (queued.length && opts.external) {
    const items = await quota.ledger.dialect.read((c) => opts.external!.items(c, customerId));
    return out.map((c) => (queued.includes(c) ? { ...c, items: items.get(Date.parse(c.periodStart)) ?? [] } : c));
  }
  return out;
}

/** How each closed period of a customer is (being) collected, keyed by period start (ISO), for the invoice list. */
export async function collectionsOf(
  quota: QuotaService,
  customerId: string,
  external?: ExternalCollector,
): Promise<Map<string, { method: CollectionMethod; items?: readonly ExternalItem[] }>> {
  return quota.ledger.dialect.read(async (c) => {
    const rows = await c.query('SELECT period_start, method FROM billing_invoice_collections WHERE customer_id = ?', [customerId]);
    const items = external ? await external.items(c, customerId) : new Map<number, ExternalItem[]>();
    const out = new Map<string, { method: CollectionMethod; items?: readonly ExternalItem[] }>();
    for (const r of rows) {
      const start = Number(r.period_start);
      const method = String(r.method) as CollectionMethod;
      out.set(new Date(start).toISOString(), method === 'credits' ? { method } : { method, items: items.get(start) ?? [] });
    }
    return out;
  });
}
