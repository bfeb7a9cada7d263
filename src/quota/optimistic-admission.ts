import { randomUUID } from 'node:crypto';
import type { SqlConnection } from '../ledger/dialect';
import { iso } from '../ledger/rows';
import type { QuotaCore } from './core';
import type { AdmitRunInput, RunAdmission } from './gate';
import type { Plan } from './plans';
import { budgetRefusal, readAdmissionFunds } from './admission-funds';
import { planAndConversation } from './session-rows';
import { percent, readSubscription } from './subscription-rows';

/**
 * The common admission on PostgreSQL without holding the subscription row
 * across a round trip. The locked admission (admission.ts) reads with the row
 * locked and writes in its second round trip, so one customer's admissions
 * queue on that row for a round trip plus however long the client's event
 * loop takes to answer: measured in queue mode with one busy customer, 3.5
 * backends waited on it at any moment and it cost a third of the throughput.
 *
 * Here the reads take no lock and the client decides; the write is one
 * statement, sent with COMMIT, whose conditions hold the decision: the
 * subscription is still active in the same period and plan, the new count
 * stays within the limit and below every alert threshold not yet fired, and
 * the conversation is still as read. The row is then locked only while the
 * server runs that statement and commits. Anything else (no subscription, a
 * period to roll, a refusal, an alert to fire, a lost race) returns null and
 * the locked admission decides, as before.
 */

/**
 * A new session. `s` counts it (PostgreSQL re-checks the WHERE against the
 * newest row version after waiting for a concurrent writer, so the limit is
 * exact); `v` points the conversation at it only if the conversation is
 * still missing or still in the session read as expired; `n` records the
 * session. When `s` counted but `v` found the conversation taken by a
 * concurrent first message, the division by zero aborts the transaction
 * (its COMMIT becomes a rollback) and the locked admission runs instead.
 */
const NEW_SESSION_SQL = `WITH s AS (
  UPDATE billing_subscriptions SET sessions_used = sessions_used + 1, updated_at = CAST(? AS BIGINT)
  WHERE customer_id = ? AND status = 'active' AND plan_id = ? AND period_start = CAST(? AS BIGINT) AND period_end = CAST(? AS BIGINT)
    AND (CAST(? AS INTEGER) IS NULL OR sessions_used + 1 <= CAST(? AS INTEGER))
  RETURNING sessions_used
), v AS (
  INSERT INTO billing_conversations (customer_id, conversation_id, session_id, started_at, last_activity_at)
  SELECT CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS BIGINT) FROM s
  ON CONFLICT (customer_id, conversation_id) DO UPDATE
    SET session_id = excluded.session_id, started_at = excluded.started_at, last_activity_at = excluded.last_activity_at
    WHERE billing_conversations.session_id = CAST(? AS TEXT)
  RETURNING session_id
), n AS (
  INSERT INTO billing_sessions (id, customer_id, conversation_id, started_at, period_start)
  SELECT session_id, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS BIGINT), CAST(? AS BIGINT) FROM v
)
SELECT s.sessions_used, 1 / (SELECT COUNT(*) FROM v) AS conversation_taken FROM s`;

/** An existing session continues: its conversation is touched while the subscription is still active in the same period and plan. */
const TOUCH_SQL = `UPDATE billing_conversations SET last_activity_at = GREATEST(last_activity_at, CAST(? AS BIGINT))
WHERE customer_id = ? AND conversation_id = ? AND session_id = ?
  AND EXISTS (SELECT 1 FROM billing_subscriptions WHERE customer_id = ? AND status = 'active' AND plan_id = ? AND period_end = CAST(? AS BIGINT))
RETURNING 1`;

/** SQLSTATE of the division by zero NEW_SESSION_SQL uses to abort. */
const ABORTED = '22012';

/** The sessions alert thresholds already fired in the subscription's current period. */
async function firedThresholds(c: SqlConnection, customerId: string): Promise<Set<number>> {
  const rows = await c.query(
    "SELECT threshold FROM billing_alerts WHERE customer_id = ? AND kind = 'sessions' AND period_start = (SELECT period_start FROM billing_subscriptions WHERE customer_id = ?)",
    [customerId, customerId],
    { prepare: true },
  );
  return new Set(rows.map((r) => Number(r.threshold)));
}

/**
 * The highest session count a new session may reach here: within the limit,
 * and below every threshold whose alert has not fired (firing is the locked
 * admission's). null: no limit and no alert.
 */
export function fastPathCeiling(plan: Pick<Plan, 'sessionsIncluded' | 'alertThresholds'>, fired: ReadonlySet<number>): number | null {
  const limit = plan.sessionsIncluded;
  if (limit === null) return null;
  const unfired = limit > 0 ? plan.alertThresholds.filter((t) => !fired.has(t)) : [];
  if (unfired.length === 0) return limit;
  const lowest = Math.min(...unfired);
  // The largest n ≤ limit with percent(n) < lowest (percent is monotone in n).
  let lo = 0;
  let hi = limit;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (percent(BigInt(mid), BigInt(limit)) < lowest) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Admits without the subscription lock, or returns null for the locked admission to decide. PostgreSQL only. */
export async function admitOptimistically(q: QuotaCore, input: AdmitRunInput, at: number): Promise<{ admission: RunAdmission; budgeted: boolean } | null> {
  let outcome;
  try {
    outcome = await q.write(async (c) => {
      const [funds, sub, read, fired] = await Promise.all([
        readAdmissionFunds(q.ledger.view(c), input, at),
        readSubscription(c, input.customerId),
        planAndConversation(c, input.customerId, input.conversationId),
        firedThresholds(c, input.customerId),
      ]);
      const plan = read.plan;
      if (!funds || !sub || !plan || sub.status !== 'active' || at >= sub.periodEnd || plan.id !== sub.planId) return null;
      const settled = { budgeted: funds.budget.budget !== null, plan, sub, available: funds.available };
      const conv = read.conversation;
      if (conv && at - conv.lastActivityAt <= plan.sessionTimeoutMs) {
        // Sent, not awaited: it leaves with COMMIT. Its failure is reported by the transaction.
        // Both statements look rows up by their keys only: kept prepared (a generic plan is right).
        const touched = c.query(TOUCH_SQL, [at, input.customerId, input.conversationId, conv.sessionId, input.customerId, plan.id, sub.periodEnd], { prepare: 'write' });
        return { ...settled, session: 'existing' as const, sessionId: conv.sessionId, counted: quiet(touched.then((r) => (r.length === 1 ? sub.sessionsUsed : null))) };
      }
      const ceiling = fastPathCeiling(plan, fired);
      if (ceiling !== null && sub.sessionsUsed + 1 > ceiling) return null;
      if (budgetRefusal(funds.budget)) return null;
      const sessionId = `ses_${randomUUID().replace(/-/g, '')}`;
      const rows = c.query(NEW_SESSION_SQL, [
        q.clock(), input.customerId, plan.id, sub.periodStart, sub.periodEnd, ceiling, ceiling,
        input.customerId, input.conversationId, sessionId, at, at, conv?.sessionId ?? null,
        input.customerId, input.conversationId, at, sub.periodStart,
      ], { prepare: 'write' });
      return { ...settled, session: 'new' as const, sessionId, counted: quiet(rows.then((r) => (r[0] ? Number(r[0].sessions_used) : null))) };
    });
    if (!outcome) return null;
    // The count the write left (a continued session: the count read); null: the write's conditions failed.
    const used = await outcome.counted;
    if (used === null) return null;
    const { plan, sub } = outcome;
    const limit = plan.sessionsIncluded;
    const admission: RunAdmission = {
      session: outcome.session,
      sessionId: outcome.sessionId,
      tier: plan.id,
      sessionsUsed: used,
      sessionsLimit: limit,
      sessionsRemaining: limit === null ? null : Math.max(0, limit - used),
      periodStart: iso(sub.periodStart),
      periodEnd: iso(sub.periodEnd),
      managedModels: plan.managedModels,
      ...(outcome.available !== undefined ? { available: outcome.available } : {}),
    };
    return { budgeted: outcome.budgeted, admission };
  } catch (e) {
    if ((e as { code?: unknown } | null)?.code === ABORTED) return null;
    throw e;
  }
}

/**
 * The write's outcome, marked handled: when the write fails, the transaction
 * reports it (its COMMIT fails with the same error) and this is never awaited.
 */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
