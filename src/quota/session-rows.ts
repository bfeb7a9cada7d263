import { type Dialect, type SqlConnection, upsertClause, writeTables } from '../ledger/dialect';
import { type Plan, storedPlan } from './plans';
import type { SubRow } from './subscription-rows';

/** billing_conversations and billing_sessions: which session a conversation is in, and the sessions of a period. */

/**
 * The subscription's plan and the conversation, in one read; no row (plan null)
 * when the customer has no subscription yet. Issued after the statement that
 * locks the subscription row (the server runs a connection's statements in
 * order, and each reads what was committed when it starts): a conversation a
 * concurrent first message just opened is then visible, so this message
 * continues that session instead of opening a second.
 */
export async function planAndConversation(
  c: SqlConnection,
  customerId: string,
  conversationId: string,
): Promise<{ plan: Plan | null; conversation: { sessionId: string; lastActivityAt: number } | null }> {
  const [r] = await c.query(
    `SELECT p.document, v.session_id, v.last_activity_at FROM billing_plans p
     LEFT JOIN billing_conversations v ON v.customer_id = ? AND v.conversation_id = ?
     WHERE p.id = (SELECT plan_id FROM billing_subscriptions WHERE customer_id = ?)`,
    [customerId, conversationId, customerId],
    { prepare: true },
  );
  if (!r) return { plan: null, conversation: null };
  const conversation = r.session_id === null || r.session_id === undefined ? null : { sessionId: String(r.session_id), lastActivityAt: Number(r.last_activity_at) };
  return { plan: storedPlan(String(r.document)), conversation };
}

const SUB_COLUMNS = ['customer_id', 'plan_id', 'status', 'anchor_day', 'period_start', 'period_end', 'sessions_used', 'pending_plan_id', 'cancel_at_period_end', 'created_at', 'updated_at'];
const SUB_MUTABLE = ['plan_id', 'status', 'period_start', 'period_end', 'sessions_used', 'pending_plan_id', 'cancel_at_period_end', 'updated_at'];

/**
 * Opens a session (openSession's two rows) and stores the subscription that
 * counted it, as one write: one statement on PostgreSQL (writeTables), three on
 * SQLite. The subscription row exists and is locked by this transaction, so its
 * upsert always takes the update branch (created_at is never written).
 */
export async function openSessionAndCount(c: SqlConnection, d: Dialect, s: { id: string; customerId: string; conversationId: string; at: number; periodStart: number }, sub: SubRow, now: number): Promise<void> {
  await writeTables(c, d, [
    { table: 'billing_sessions', columns: ['id', 'customer_id', 'conversation_id', 'started_at', 'period_start'], rows: [[s.id, s.customerId, s.conversationId, s.at, s.periodStart]] },
    {
      table: 'billing_conversations',
      columns: ['customer_id', 'conversation_id', 'session_id', 'started_at', 'last_activity_at'],
      rows: [[s.customerId, s.conversationId, s.id, s.at, s.at]],
      onConflict: upsertClause('customer_id, conversation_id', ['session_id', 'started_at', 'last_activity_at']),
    },
    {
      table: 'billing_subscriptions',
      columns: SUB_COLUMNS,
      rows: [[sub.customerId, sub.planId, sub.status, sub.anchorDay, sub.periodStart, sub.periodEnd, sub.sessionsUsed, sub.pendingPlanId, sub.cancelAtPeriodEnd ? 1 : 0, now, now]],
      onConflict: upsertClause('customer_id', SUB_MUTABLE),
    },
  ]);
}

export async function touchConversation(c: SqlConnection, customerId: string, conversationId: string, at: number): Promise<void> {
  await c.run('UPDATE billing_conversations SET last_activity_at = ? WHERE customer_id = ? AND conversation_id = ?', [at, customerId, conversationId]);
}


export async function sessionsInPeriod(c: SqlConnection, customerId: string, periodStart: number): Promise<number> {
  const [r] = await c.query('SELECT COUNT(*) AS n FROM billing_sessions WHERE customer_id = ? AND period_start = ?', [customerId, periodStart]);
  return Number(r?.n ?? 0);
}
