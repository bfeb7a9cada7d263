import type { SqlConnection } from '../ledger/dialect';
import { iso } from '../ledger/rows';
import type { Period } from '../period';
import type { Alert, QuotaOptions } from './types';

/** Records each crossed threshold once per period (the primary key makes a second insert a no-op); returns the new ones. */
export async function fireAlerts(
  c: SqlConnection,
  inTransaction: QuotaOptions['inTransaction'],
  a: { customerId: string; periodStart: number; kind: Alert['kind']; pct: number; thresholds: readonly number[]; at: number },
): Promise<Alert[]> {
  const out: Alert[] = [];
  for (const t of a.thresholds) {
    if (a.pct < t) continue;
    const inserted = await c.run(
      'INSERT INTO billing_alerts (customer_id, period_start, kind, threshold, value, fired_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id, period_start, kind, threshold) DO NOTHING',
      [a.customerId, a.periodStart, a.kind, t, a.pct.toFixed(2), a.at],
    );
    if (inserted > 0) {
      const alert: Alert = { customerId: a.customerId, kind: a.kind, threshold: t, value: a.pct.toFixed(2), periodStart: iso(a.periodStart), firedAt: iso(a.at) };
      await inTransaction?.(c, { kind: 'alert', alert });
      out.push(alert);
    }
  }
  return out;
}

export async function deliverAlerts(onAlert: QuotaOptions['onAlert'], alerts: readonly Alert[]): Promise<void> {
  if (!onAlert) return;
  for (const a of alerts) {
    try {
      await onAlert(a);
    } catch {
      // A failing hook never blocks billing; the alert is recorded and visible in the CLI.
    }
  }
}

export async function listAlerts(c: SqlConnection, customerId: string, period?: Period): Promise<Alert[]> {
  const rows = period
    ? await c.query('SELECT * FROM billing_alerts WHERE customer_id = ? AND period_start = ? ORDER BY fired_at, kind, threshold', [customerId, period.start])
    : await c.query('SELECT * FROM billing_alerts WHERE customer_id = ? ORDER BY fired_at, kind, threshold', [customerId]);
  return rows.map((r) => ({
    customerId: String(r.customer_id),
    kind: String(r.kind) as Alert['kind'],
    threshold: Number(r.threshold),
    value: String(r.value),
    periodStart: iso(Number(r.period_start)),
    firedAt: iso(Number(r.fired_at)),
  }));
}
