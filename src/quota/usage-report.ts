import { iso } from '../ledger/rows';
import type { Balance, BudgetState } from '../ledger/types';
import type { Period } from '../period';
import type { Plan } from './plans';
import { percent } from './subscription-rows';
import type { Invoice, SubscriptionStatus, UsageReport } from './types';

/** The usage report of one period, from what the caller read in one snapshot (alerts are added by the caller). */
export function usageReport(a: {
  customerId: string;
  plan: Plan;
  status: SubscriptionStatus;
  period: Period;
  sessionsUsed: number;
  invoice: Invoice;
  balance: Balance;
  budget: BudgetState;
}): Omit<UsageReport, 'alerts'> {
  const { customerId, plan, status, period, sessionsUsed, invoice: inv, balance: bal, budget } = a;
  const limit = plan.sessionsIncluded;
  const usagePercentage = limit === null ? 0 : percent(BigInt(sessionsUsed), BigInt(limit));
  const budgetUsed = budget.spent + budget.held;
  const budgetOpen = budget.budget === null || budgetUsed < budget.budget;
  return {
    customerId,
    tier: plan.id,
    status,
    periodStart: iso(period.start),
    periodEnd: iso(period.end),
    sessionsUsed,
    sessionsLimit: limit,
    sessionsRemaining: limit === null ? null : Math.max(0, limit - sessionsUsed),
    usagePercentage,
    // Near the limit from the plan's first alert threshold on (the same line its alerts fire at).
    isNearLimit: limit !== null && plan.alertThresholds.length > 0 && usagePercentage >= plan.alertThresholds[0]!,
    nearLimitThreshold: plan.alertThresholds[0] ?? null,
    canMakeRequests: status === 'active' && (limit === null || sessionsUsed < limit) && budgetOpen,
    base: plan.basePrice,
    overage: inv.overage,
    usageCharges: inv.prepaidUsage,
    currentCharges: plan.basePrice + inv.overage + inv.prepaidUsage,
    balance: bal.balance,
    available: bal.available,
    budget: budget.budget,
    budgetUsed,
    metrics: inv.lines,
    managedModels: plan.managedModels,
  };
}
