import { periodContaining } from '../period';
import { type CustomerRow, iso } from './rows';
import type { BudgetState } from './types';

/**
 * The one roll-over rule: a customer's budget period is current while `now` lies
 * in [start, end); otherwise it is the anchored period containing `now`, with
 * nothing spent yet. Every reader and writer of a budget goes through here.
 */
export function currentBudgetPeriod(
  cust: Pick<CustomerRow, 'budget' | 'budgetAnchorDay' | 'budgetPeriodStart' | 'budgetPeriodEnd' | 'budgetSpent'>,
  now: number,
): { rolled: boolean; start: number | null; end: number | null; spent: bigint } {
  const same = { rolled: false, start: cust.budgetPeriodStart, end: cust.budgetPeriodEnd, spent: cust.budgetSpent };
  if (cust.budget === null || cust.budgetAnchorDay === null) return same;
  if (cust.budgetPeriodEnd !== null && now < cust.budgetPeriodEnd && cust.budgetPeriodStart !== null && now >= cust.budgetPeriodStart) return same;
  const p = periodContaining(now, cust.budgetAnchorDay);
  return { rolled: true, start: p.start, end: p.end, spent: 0n };
}

/** A customer's budget as of `at`, through the roll-over rule (after a write, the stored period is already current). */
export function budgetStateAt(cust: CustomerRow, at: number): BudgetState {
  const p = currentBudgetPeriod(cust, at);
  return {
    customerId: cust.id,
    budget: cust.budget,
    spent: p.spent,
    held: cust.held,
    periodStart: p.start === null ? null : iso(p.start),
    periodEnd: p.end === null ? null : iso(p.end),
  };
}
