import { randomUUID } from 'node:crypto';
import { BillingError, CustomerNotFoundError, QuotaExceededError, ValidationError } from '../errors';
import type { SqlConnection } from '../ledger/dialect';
import { iso } from '../ledger/rows';
import { budgetRefusal, readAdmissionFunds, runAdmission } from './admission-funds';
import { deliverAlerts, fireAlerts } from './alerts';
import type { QuotaCore } from './core';
import type { AdmitRunInput, RunAdmission } from './gate';
import { admitOptimistically } from './optimistic-admission';
import { getPlan } from './plan-book';
import { DEFAULT_ALERT_THRESHOLDS } from './plans';
import { openSessionAndCount, planAndConversation, touchConversation } from './session-rows';
import { percent } from './subscription-rows';
import type { Alert } from './types';

/**
 * Admission: whether a run may start. Every admission is one write
 * transaction holding the subscription row, so concurrent first messages and
 * the last free session are decided atomically; a refusal (quota, budget,
 * inactive subscription) is recorded with its cause, and crossed alert
 * thresholds fire once per period.
 */

/**
 * Records a message in a conversation and admits the run: an existing
 * session always continues (graceful degradation); a new one needs a free
 * session in the period and an unexhausted budget.
 */
export async function admitRun(q: QuotaCore, input: AdmitRunInput): Promise<RunAdmission> {
  const at = input.at?.getTime() ?? q.clock();
  if (typeof input.conversationId !== 'string' || input.conversationId.length === 0 || input.conversationId.length > 255) {
    throw new ValidationError('conversation id must be 1–255 characters', { field: 'conversationId' });
  }
  await q.ensurePlans();
  // Where rows are locked across round trips (PostgreSQL), the common case first without that lock.
  if (q.d.name === 'postgres') {
    const fast = await admitOptimistically(q, input, at);
    if (fast) {
      if (fast.budgeted) await deliverAlerts(q.opts.onAlert, await checkBudgetAlerts(q, input.customerId, at));
      return fast.admission;
    }
  }
  const fired: Alert[] = [];
  // Round trips are the cost of an admission (every metered prediction makes one): the customer and its
  // budget in one read, the subscription locked, its plan and the conversation in one read, a new
  // session's three rows in one write where the dialect can (PostgreSQL), and no write of an unchanged row.
  let budgeted = false;
  const admission = await q.write(async (c) => {
    // Three reads that need no answer from each other, sent together in this order (PostgreSQL's
    // connection pipelines them, with BEGIN, in one round trip; the server runs them in order, so the plan
    // and conversation are read once the subscription row is locked).
    const view = q.ledger.view(c);
    const [funds, locked, read] = await Promise.all([
      readAdmissionFunds(view, input, at),
      q.lockSub(c, input.customerId),
      planAndConversation(c, input.customerId, input.conversationId),
    ]);
    if (!funds) throw new CustomerNotFoundError(input.customerId);
    const budget = funds.budget;
    budgeted = budget.budget !== null;
    let sub = locked;
    let { plan, conversation: conv } = read;
    let fresh = false;
    if (!sub) {
      // Racing first runs both insert; the loser's insert is a no-op and both then lock the one row.
      const initial = q.newSub(input.customerId, q.defaultPlanId, new Date(at).getUTCDate(), at);
      await q.planIn(c, initial.planId);
      const inserted = await q.saveSub(c, initial, true);
      sub = (await q.lockSub(c, input.customerId))!;
      if (inserted) {
        await q.audit(c, 'subscribe', input.customerId, { planId: sub.planId, change: 'new', reason: 'default plan on first run' });
      }
      fresh = true;
      // Read before the subscription existed (and was locked): read again.
      ({ plan, conversation: conv } = await planAndConversation(c, input.customerId, input.conversationId));
    }
    const before = sub.periodEnd;
    await q.roll(c, sub, at);
    // A session is counted in the period it started, and a period before this one is closed (its invoice
    // too): a message dated back there is refused, not counted here. Only a time the caller gave: a run's
    // own clock may trail another process's that just rolled the period by a few milliseconds.
    if (input.at !== undefined && at < sub.periodStart) {
      throw new ValidationError(`at ${new Date(at).toISOString()} is before the current billing period (from ${iso(sub.periodStart)}), which is already closed`, {
        field: 'at', periodStart: iso(sub.periodStart),
      });
    }
    const changed = fresh || sub.periodEnd !== before;
    if (sub.status !== 'active') {
      if (changed) await q.saveSub(c, sub, false);
      return refused(q, c, input, at, new BillingError('SUBSCRIPTION_INACTIVE', `The subscription of customer ${input.customerId} is ${sub.status}`, { customerId: input.customerId, status: sub.status }));
    }
    // A roll may have moved the subscription to its pending plan.
    if (plan?.id !== sub.planId) plan = await q.planIn(c, sub.planId);
    let session: 'new' | 'existing';
    let sessionId: string;
    if (conv && at - conv.lastActivityAt <= plan.sessionTimeoutMs) {
      session = 'existing';
      sessionId = conv.sessionId;
      await touchConversation(c, input.customerId, input.conversationId, Math.max(at, conv.lastActivityAt));
      if (changed) await q.saveSub(c, sub, false);
    } else {
      if (plan.sessionsIncluded !== null && sub.sessionsUsed >= plan.sessionsIncluded) {
        if (changed) await q.saveSub(c, sub, false);
        return refused(q, c, input, at, new QuotaExceededError({
          customerId: input.customerId,
          sessionsUsed: sub.sessionsUsed,
          sessionsLimit: plan.sessionsIncluded,
          periodEnd: iso(sub.periodEnd),
          planId: plan.id,
        }));
      }
      const overBudget = budgetRefusal(budget);
      if (overBudget) {
        if (changed) await q.saveSub(c, sub, false);
        return refused(q, c, input, at, overBudget);
      }
      session = 'new';
      sessionId = `ses_${randomUUID().replace(/-/g, '')}`;
      sub.sessionsUsed += 1;
      await openSessionAndCount(c, q.d, { id: sessionId, customerId: input.customerId, conversationId: input.conversationId, at, periodStart: sub.periodStart }, sub, q.clock());
      if (plan.sessionsIncluded !== null && plan.sessionsIncluded > 0) {
        const pct = percent(BigInt(sub.sessionsUsed), BigInt(plan.sessionsIncluded));
        fired.push(...(await fire(q, c, input.customerId, sub.periodStart, 'sessions', pct, plan.alertThresholds, at)));
      }
    }
    return runAdmission(plan, sub, session, sessionId, sub.sessionsUsed, funds.available);
  });
  // Refusals are returned from the transaction so the period roll it did is kept.
  if (admission instanceof BillingError) throw admission;
  // A customer without a budget has no budget alerts: no need to read it again.
  if (budgeted) fired.push(...(await checkBudgetAlerts(q, input.customerId, at)));
  await deliverAlerts(q.opts.onAlert, fired);
  return admission;
}

async function refused(q: QuotaCore, c: SqlConnection, input: AdmitRunInput, at: number, error: BillingError): Promise<BillingError> {
  await q.opts.inTransaction?.(c, { kind: 'refused', customerId: input.customerId, conversationId: input.conversationId, error, at });
  return error;
}

async function checkBudgetAlerts(q: QuotaCore, customerId: string, at: number): Promise<Alert[]> {
  const b = await q.ledger.budget(customerId);
  if (b.budget === null || b.budget === 0n || !b.periodStart) return [];
  const [sub] = await q.d.read((c) => c.query('SELECT plan_id FROM billing_subscriptions WHERE customer_id = ?', [customerId]));
  const thresholds = sub ? (await getPlan(q, String(sub.plan_id))).alertThresholds : DEFAULT_ALERT_THRESHOLDS;
  const pct = percent(b.spent, b.budget);
  // Below every threshold there is nothing to fire: no write transaction (a budgeted customer's every admission comes here).
  if (!thresholds.some((t) => pct >= t)) return [];
  return q.write((c) => fire(q, c, customerId, Date.parse(b.periodStart!), 'budget', pct, thresholds, at));
}

function fire(q: QuotaCore, c: SqlConnection, customerId: string, periodStart: number, kind: Alert['kind'], pct: number, thresholds: readonly number[], at: number): Promise<Alert[]> {
  return fireAlerts(c, q.opts.inTransaction, { customerId, periodStart, kind, pct, thresholds, at });
}
