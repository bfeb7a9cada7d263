import { formatUsd } from '../money';
import type { LedgerHandle } from './ledgers';

/** What a customer may see about their own account: JSON-able, amounts as USD strings. */
export interface UsageSummary {
  readonly customerId: string;
  readonly plan: string;
  readonly periodStart: string;
  readonly periodEnd: string;
  readonly sessionsUsed: number;
  readonly sessionsLimit: number | null;
  readonly sessionsRemaining: number | null;
  readonly balanceUsd: string;
  readonly availableUsd: string;
  readonly currentChargesUsd: string;
  readonly usageChargesUsd: string;
  readonly budgetUsd: string | null;
  readonly canMakeRequests: boolean;
}

export async function usageSummary(handle: LedgerHandle, customerId: string): Promise<UsageSummary> {
  const r = await handle.quota.usage(customerId);
  return {
    customerId,
    plan: r.tier,
    periodStart: r.periodStart,
    periodEnd: r.periodEnd,
    sessionsUsed: r.sessionsUsed,
    sessionsLimit: r.sessionsLimit,
    sessionsRemaining: r.sessionsRemaining,
    balanceUsd: formatUsd(r.balance),
    availableUsd: formatUsd(r.available),
    currentChargesUsd: formatUsd(r.currentCharges),
    usageChargesUsd: formatUsd(r.usageCharges),
    budgetUsd: r.budget === null ? null : formatUsd(r.budget),
    canMakeRequests: r.canMakeRequests,
  };
}
