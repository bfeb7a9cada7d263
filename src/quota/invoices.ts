import { decodeResult, encodeResult, iso } from '../ledger/rows';
import type { SqlConnection } from '../ledger/dialect';
import type { LedgerView } from '../ledger/within';
import { divRound, formatQuantity, parseQuantity, QUANTITY_DECIMALS } from '../money';
import type { Period } from '../period';
import type { Plan } from './plans';
import type { Invoice, MetricLine } from './types';

/** What a period used per plan metric: recorded usage plus the quantities of the ledger's priced charges. */
async function metricUsage(c: SqlConnection, ledger: LedgerView, customerId: string, period: Period, metrics: Iterable<string>): Promise<Map<string, bigint>> {
  const scaled = (text: string) => {
    const q = parseQuantity(text);
    return q.units * 10n ** BigInt(QUANTITY_DECIMALS - q.scale);
  };
  const used = new Map<string, bigint>();
  const wanted = new Set(metrics);
  for (const m of wanted) used.set(m, 0n);
  if (wanted.size === 0) return used;
  const recorded = await c.query('SELECT metric, quantity FROM billing_usage WHERE customer_id = ? AND period_start = ?', [customerId, period.start]);
  for (const r of recorded) {
    const m = String(r.metric);
    if (wanted.has(m)) used.set(m, used.get(m)! + scaled(String(r.quantity)));
  }
  for (const r of await ledger.chargedUsage(customerId, period.start, period.end)) {
    const type = r.chargeType ?? '';
    const qty = r.quantity;
    if (!/^\d+(\.\d+)?$/.test(qty)) continue;
    let metric = type;
    let value = scaled(qty);
    if (type === 'compute') {
      metric = 'compute_minutes';
      value = value / 60_000n; // recorded in ms
    } else if (type.startsWith('tokens')) metric = 'tokens';
    else if (type === 'storage') metric = 'storage_gb_months';
    if (wanted.has(metric)) used.set(metric, used.get(metric)! + value);
  }
  return used;
}

export async function invoiceFor(c: SqlConnection, ledger: LedgerView, customerId: string, plan: Plan, period: Period): Promise<Invoice> {
  const used = await metricUsage(c, ledger, customerId, period, plan.metrics.keys());
  const lines: MetricLine[] = [];
  let overage = 0n;
  for (const [metric, m] of plan.metrics) {
    const u = used.get(metric) ?? 0n;
    const over = u > m.included.units ? u - m.included.units : 0n;
    const amount = divRound(over * m.overage, 10n ** BigInt(QUANTITY_DECIMALS));
    overage += amount;
    lines.push({
      metric,
      unit: m.unit,
      used: formatQuantity({ units: u, scale: QUANTITY_DECIMALS }),
      included: formatQuantity(m.included),
      overage: formatQuantity({ units: over, scale: QUANTITY_DECIMALS }),
      overagePrice: m.overage,
      amount,
    });
  }
  const prepaidUsage = await ledger.collected(customerId, period.start, period.end);
  return {
    id: null,
    customerId,
    planId: plan.id,
    periodStart: iso(period.start),
    periodEnd: iso(period.end),
    base: plan.basePrice,
    lines,
    overage,
    total: plan.basePrice + overage,
    prepaidUsage,
    closedAt: null,
  };
}

export const encodeInvoice = (inv: Invoice): string => encodeResult(inv);
export const decodeInvoice = (text: string): Invoice => decodeResult<Invoice>(text);

/** billing_invoices: one closed, immutable invoice document per customer and period. */

export async function invoiceClosed(c: SqlConnection, customerId: string, periodStart: number): Promise<boolean> {
  const [r] = await c.query('SELECT id FROM billing_invoices WHERE customer_id = ? AND period_start = ?', [customerId, periodStart]);
  return r !== undefined;
}

export async function storeInvoice(c: SqlConnection, i: { id: string; customerId: string; period: Period; planId: string; total: bigint; document: string; closedAt: number }): Promise<void> {
  await c.run('INSERT INTO billing_invoices (id, customer_id, period_start, period_end, plan_id, total, document, closed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)', [
    i.id,
    i.customerId,
    i.period.start,
    i.period.end,
    i.planId,
    i.total,
    i.document,
    i.closedAt,
  ]);
}

export async function latestInvoice(c: SqlConnection, customerId: string): Promise<Invoice | null> {
  const [r] = await c.query('SELECT document FROM billing_invoices WHERE customer_id = ? ORDER BY period_start DESC LIMIT 1', [customerId]);
  return r ? decodeInvoice(String(r.document)) : null;
}

export async function allInvoices(c: SqlConnection, customerId: string): Promise<Invoice[]> {
  const rows = await c.query('SELECT document FROM billing_invoices WHERE customer_id = ? ORDER BY period_start', [customerId]);
  return rows.map((r) => decodeInvoice(String(r.document)));
}
