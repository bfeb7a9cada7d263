import { periodContaining } from '../period';
import type { CustomerRow } from './rows';

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
