import type { SqlConnection } from '../ledger/dialect';

/** billing_conversations and billing_sessions: which session a conversation is in, and the sessions of a period. */

export async function findConversation(c: SqlConnection, customerId: string, conversationId: string): Promise<{ sessionId: string; lastActivityAt: number } | null> {
  const [r] = await c.query('SELECT * FROM billing_conversations WHERE customer_id = ? AND conversation_id = ?', [customerId, conversationId]);
  return r ? { sessionId: String(r.session_id), lastActivityAt: Number(r.last_activity_at) } : null;
}

export async function touchConversation(c: SqlConnection, customerId: string, conversationId: string, at: number): Promise<void> {
  await c.run('UPDATE billing_conversations SET last_activity_at = ? WHERE customer_id = ? AND conversation_id = ?', [at, customerId, conversationId]);
}

/** Starts a session and points the conversation at it. */
export async function openSession(c: SqlConnection, s: { id: string; customerId: string; conversationId: string; at: number; periodStart: number }): Promise<void> {
  await c.run('INSERT INTO billing_sessions (id, customer_id, conversation_id, started_at, period_start) VALUES (?, ?, ?, ?, ?)', [s.id, s.customerId, s.conversationId, s.at, s.periodStart]);
  await c.run(
    `INSERT INTO billing_conversations (customer_id, conversation_id, session_id, started_at, last_activity_at) VALUES (?, ?, ?, ?, ?)
     ON CONFLICT (customer_id, conversation_id) DO UPDATE SET session_id = excluded.session_id, started_at = excluded.started_at, last_activity_at = excluded.last_activity_at`,
    [s.customerId, s.conversationId, s.id, s.at, s.at],
  );
}

export async function sessionsInPeriod(c: SqlConnection, customerId: string, periodStart: number): Promise<number> {
  const [r] = await c.query('SELECT COUNT(*) AS n FROM billing_sessions WHERE customer_id = ? AND period_start = ?', [customerId, periodStart]);
  return Number(r?.n ?? 0);
}
