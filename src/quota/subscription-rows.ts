import type { Dialect, Row, SqlConnection } from '../ledger/dialect';
import { iso } from '../ledger/rows';
import { divRound } from '../money';
import type { Subscription, SubscriptionStatus } from './types';

/** A billing_subscriptions row as quota keeps it in memory. */
export interface SubRow {
  customerId: string;
  planId: string;
  status: SubscriptionStatus;
  anchorDay: number;
  periodStart: number;
  periodEnd: number;
  sessionsUsed: number;
  pendingPlanId: string | null;
  cancelAtPeriodEnd: boolean;
}

export function subFromRow(r: Row): SubRow {
  return {
    customerId: String(r.customer_id),
    planId: String(r.plan_id),
    status: String(r.status) as SubscriptionStatus,
    anchorDay: Number(r.anchor_day),
    periodStart: Number(r.period_start),
    periodEnd: Number(r.period_end),
    sessionsUsed: Number(r.sessions_used),
    pendingPlanId: r.pending_plan_id === null ? null : String(r.pending_plan_id),
    cancelAtPeriodEnd: Number(r.cancel_at_period_end) === 1,
  };
}

export const subOut = (s: SubRow): Subscription => ({
  customerId: s.customerId,
  planId: s.planId,
  status: s.status,
  anchorDay: s.anchorDay,
  periodStart: iso(s.periodStart),
  periodEnd: iso(s.periodEnd),
  sessionsUsed: s.sessionsUsed,
  pendingPlanId: s.pendingPlanId,
  cancelAtPeriodEnd: s.cancelAtPeriodEnd,
});

/** Percentage with two decimals, computed exactly: 19/25 → 76, 2/3 → 66.67. */
export function percent(used: bigint, limit: bigint): number {
  if (limit <= 0n) return used > 0n ? 100 : 0;
  return Number(divRound(used * 10_000n, limit, 'down')) / 100;
}

/** The subscription row, locked for the rest of the transaction where the database locks rows. Every locked admission reads it: kept prepared. */
export async function lockSubscription(c: SqlConnection, d: Dialect, customerId: string): Promise<SubRow | null> {
  const [r] = await c.query(`SELECT * FROM billing_subscriptions WHERE customer_id = ? ${d.forUpdate}`, [customerId], { prepare: true });
  return r ? subFromRow(r) : null;
}

/** Returns the number of rows written (0 when an insert lost a race). */
export async function saveSubscription(c: SqlConnection, s: SubRow, insert: boolean, now: number): Promise<number> {
  if (insert) {
    return c.run(
      `INSERT INTO billing_subscriptions (customer_id, plan_id, status, anchor_day, period_start, period_end, sessions_used, pending_plan_id, cancel_at_period_end, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id) DO NOTHING`,
      [s.customerId, s.planId, s.status, s.anchorDay, s.periodStart, s.periodEnd, s.sessionsUsed, s.pendingPlanId, s.cancelAtPeriodEnd ? 1 : 0, now, now],
    );
  }
  return c.run(
    `UPDATE billing_subscriptions SET plan_id = ?, status = ?, period_start = ?, period_end = ?, sessions_used = ?, pending_plan_id = ?, cancel_at_period_end = ?, updated_at = ?
     WHERE customer_id = ?`,
    [s.planId, s.status, s.periodStart, s.periodEnd, s.sessionsUsed, s.pendingPlanId, s.cancelAtPeriodEnd ? 1 : 0, now, s.customerId],
  );
}
