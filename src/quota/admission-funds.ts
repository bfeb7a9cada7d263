import { BudgetExceededError } from '../errors';
import type { BudgetState, Ledger } from '../ledger/types';
import { formatUsd } from '../money';
import { iso } from '../ledger/rows';
import type { AdmitRunInput, RunAdmission } from './gate';
import type { Plan } from './plans';
import type { SubRow } from './subscription-rows';

/** What both admissions (locked and optimistic) share: what they read and decide about the customer's money, and the admission they answer with. */

export interface AdmissionFunds {
  readonly budget: BudgetState;
  /** Read only when the caller asked (`withAvailable`: a guard's funds check). */
  readonly available: bigint | undefined;
}

/** The budget as of `at`, and the available balance when asked, from one statement; null when the customer is unknown. */
export async function readAdmissionFunds(view: ReturnType<Ledger['view']>, input: AdmitRunInput, at: number): Promise<AdmissionFunds | null> {
  if (input.withAvailable) return view.budgetAndAvailableAt(input.customerId, at);
  const budget = await view.budgetAt(input.customerId, at);
  return budget ? { budget, available: undefined } : null;
}

/** A run may not start once the budget is fully used (spent + held); steps are capped by the ledger itself. */
export function budgetRefusal(b: BudgetState): BudgetExceededError | null {
  if (b.budget === null) return null;
  if (b.spent + b.held < b.budget) return null;
  return new BudgetExceededError({ customerId: b.customerId, budgetUsd: formatUsd(b.budget), spentUsd: formatUsd(b.spent), heldUsd: formatUsd(b.held), requiredUsd: '0.00', periodEnd: b.periodEnd });
}

/** The admission of a run in `sub`'s period under `plan`, `used` being the session count its write left. */
export function runAdmission(plan: Plan, sub: SubRow, session: RunAdmission['session'], sessionId: string, used: number, available: bigint | undefined): RunAdmission {
  const limit = plan.sessionsIncluded;
  return {
    session,
    sessionId,
    tier: plan.id,
    sessionsUsed: used,
    sessionsLimit: limit,
    sessionsRemaining: limit === null ? null : Math.max(0, limit - used),
    periodStart: iso(sub.periodStart),
    periodEnd: iso(sub.periodEnd),
    managedModels: plan.managedModels,
    ...(available !== undefined ? { available } : {}),
  };
}
