import type { Row } from '../ledger/dialect';
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
