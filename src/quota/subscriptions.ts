import { BillingError, ValidationError } from '../errors';
import { iso } from '../ledger/rows';
import type { QuotaCore } from './core';
import { comparePlans, planIdSchema } from './plans';
import { subFromRow, subOut } from './subscription-rows';
import type { Subscription } from './types';

/** A customer's place on a plan: subscribe (new, upgrade now, downgrade next period), cancel, suspend and resume. */

export async function getSubscription(q: QuotaCore, customerId: string): Promise<Subscription | null> {
  const [r] = await q.d.read((c) => c.query('SELECT * FROM billing_subscriptions WHERE customer_id = ?', [customerId]));
  return r ? subOut(subFromRow(r)) : null;
}

/**
 * Puts a customer on a plan. New: starts a period now (anchored on today,
 * or `anchorDay`). Upgrade: immediate. Downgrade: at the next period.
 * The same plan again clears a pending downgrade or cancellation; a downgrade
 * clears a pending cancellation; any plan reactivates a canceled one now.
 */
export async function subscribe(
  q: QuotaCore,
  input: { customerId: string; planId: string; anchorDay?: number; at?: Date },
): Promise<{ subscription: Subscription; change: 'new' | 'upgrade' | 'downgrade' | 'unchanged' }> {
  const planId = planIdSchema.safeParse(input.planId);
  if (!planId.success) throw ValidationError.fromZod('plan id', planId.error);
  if (input.anchorDay !== undefined && (!Number.isInteger(input.anchorDay) || input.anchorDay < 1 || input.anchorDay > 31)) {
    throw new ValidationError('anchor day must be an integer 1–31', { field: 'anchorDay', value: input.anchorDay });
  }
  await q.ensurePlans();
  const at = input.at?.getTime() ?? q.clock();
  return q.write(async (c) => {
    await q.requireCustomer(c, input.customerId);
    const plan = await q.planIn(c, input.planId);
    const sub = await q.lockSub(c, input.customerId);
    if (!sub) {
      const fresh = q.newSub(input.customerId, plan.id, input.anchorDay ?? new Date(at).getUTCDate(), at);
      await q.saveSub(c, fresh, true);
      await q.audit(c, 'subscribe', input.customerId, { planId: plan.id, change: 'new' });
      return { subscription: subOut(fresh), change: 'new' as const };
    }
    await q.roll(c, sub, at);
    const current = await q.planIn(c, sub.planId);
    const cmp = comparePlans(plan, current);
    let change: 'new' | 'upgrade' | 'downgrade' | 'unchanged';
    if (sub.status === 'canceled' && plan.id !== current.id) {
      // Nothing is paid for a canceled period, so there is no period to protect: a cheaper plan too starts
      // now (a downgrade would wait for a period end that never reactivates the subscription).
      change = 'new';
      sub.planId = plan.id;
      sub.pendingPlanId = null;
      sub.cancelAtPeriodEnd = false;
      sub.status = 'active';
    } else if (plan.id === current.id) {
      change = 'unchanged';
      sub.pendingPlanId = null;
      sub.cancelAtPeriodEnd = false;
      if (sub.status === 'canceled') sub.status = 'active';
    } else if (cmp > 0 || (cmp === 0 && plan.id !== current.id)) {
      change = 'upgrade';
      sub.planId = plan.id;
      sub.pendingPlanId = null;
      sub.cancelAtPeriodEnd = false;
      if (sub.status === 'canceled') sub.status = 'active';
    } else {
      change = 'downgrade';
      sub.pendingPlanId = plan.id;
      // Choosing a plan for the next period withdraws a pending cancellation, as the same plan again does.
      sub.cancelAtPeriodEnd = false;
    }
    await q.saveSub(c, sub, false);
    await q.audit(c, 'subscribe', input.customerId, { planId: plan.id, change });
    return { subscription: subOut(sub), change };
  });
}

/** Cancels at the end of the current period; sessions keep working until then. */
export async function cancel(q: QuotaCore, customerId: string): Promise<Subscription> {
  return q.write(async (c) => {
    const sub = await q.lockSub(c, customerId);
    if (!sub) throw new BillingError('SUBSCRIPTION_NOT_FOUND', `Customer ${customerId} has no subscription`, { customerId });
    await q.roll(c, sub, q.clock());
    sub.cancelAtPeriodEnd = true;
    await q.saveSub(c, sub, false);
    await q.audit(c, 'cancel', customerId, { periodEnd: iso(sub.periodEnd) });
    return subOut(sub);
  });
}

/** Suspends (e.g. an unpaid invoice) or resumes a subscription; suspended customers cannot start runs. */
export async function setStatus(q: QuotaCore, customerId: string, status: 'active' | 'suspended'): Promise<Subscription> {
  return q.write(async (c) => {
    const sub = await q.lockSub(c, customerId);
    if (!sub) throw new BillingError('SUBSCRIPTION_NOT_FOUND', `Customer ${customerId} has no subscription`, { customerId });
    sub.status = status;
    await q.saveSub(c, sub, false);
    await q.audit(c, status === 'active' ? 'resume' : 'suspend', customerId, {});
    return subOut(sub);
  });
}
