import { randomUUID } from 'node:crypto';
import type { SqlConnection } from '../ledger/dialect';
import { GroupCommitter, type GroupOutcome } from '../ledger/group-commit';
import type { QuotaCore } from './core';
import type { AdmitRunInput, RunAdmission } from './gate';
import { budgetRefusal, readAdmissionFunds, runAdmission } from './admission-funds';
import { type Plan, storedPlan } from './plans';
import { percent, type SubRow, subFromRow } from './subscription-rows';

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

/**
 * The admission's commit does not wait for its log flush. Nothing is paid on
 * its word alone: a metered call's hold is a full commit, made before the
 * provider is called, and flushing the log up to it flushes this commit too.
 * Otherwise the WAL writer flushes it within three wal_writer_delays; a
 * server crash in that window can lose the admission of a run that held
 * nothing (a session uncounted, a conversation's activity not recorded).
 */
const DEFERRED = { durability: 'deferred' } as const;

/** SQLSTATE of the division by zero NEW_SESSION_SQL uses to abort. */
const ABORTED = '22012';

/**
 * Everything the decision needs but the money, as one statement (one snapshot,
 * one execution instead of three): the subscription, its plan, the
 * conversation, and the sessions alert thresholds fired in the current period.
 * No row: no subscription yet (or its plan is gone), for the locked admission.
 */
const STATE_SQL = `SELECT s.*, p.document, v.session_id AS conversation_session_id, v.last_activity_at AS conversation_last_activity_at,
  (SELECT string_agg(CAST(a.threshold AS TEXT), ',') FROM billing_alerts a
   WHERE a.customer_id = s.customer_id AND a.kind = 'sessions' AND a.period_start = s.period_start) AS fired
FROM billing_subscriptions s
JOIN billing_plans p ON p.id = s.plan_id
LEFT JOIN billing_conversations v ON v.customer_id = s.customer_id AND v.conversation_id = ?
WHERE s.customer_id = ?`;

interface AdmissionState {
  readonly sub: SubRow;
  readonly plan: Plan;
  readonly conversation: { sessionId: string; lastActivityAt: number } | null;
  readonly fired: ReadonlySet<number>;
}

async function readState(c: SqlConnection, customerId: string, conversationId: string): Promise<AdmissionState | null> {
  const [r] = await c.query(STATE_SQL, [conversationId, customerId], { prepare: true });
  if (!r) return null;
  const session = r.conversation_session_id;
  return {
    sub: subFromRow(r),
    plan: storedPlan(String(r.document)),
    conversation: session === null || session === undefined ? null : { sessionId: String(session), lastActivityAt: Number(r.conversation_last_activity_at) },
    fired: new Set(r.fired === null || r.fired === undefined ? [] : String(r.fired).split(',').map(Number)),
  };
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

export interface Optimistic {
  readonly admission: RunAdmission;
  readonly budgeted: boolean;
}

interface Pending {
  readonly input: AdmitRunInput;
  readonly at: number;
}

type Read = [Awaited<ReturnType<typeof readAdmissionFunds>>, AdmissionState | null];

/** A decision whose write is on its way: what it admits once the write's outcome (the count it left) is known. */
interface Decided {
  readonly budgeted: boolean;
  readonly plan: Plan;
  readonly sub: SubRow;
  readonly available: bigint | undefined;
  readonly session: 'new' | 'existing';
  readonly sessionId: string;
  /** The count the write left (a continued session: the count read); null: the write's conditions failed. */
  readonly counted: Promise<number | null>;
}

/**
 * Decides one admission from what was read and sends its write (not awaited:
 * it leaves with the next statements or COMMIT, and its failure is reported by
 * the transaction). null: the locked admission decides.
 */
function decide(q: QuotaCore, c: SqlConnection, { input, at }: Pending, [funds, state]: Read): Decided | null {
  if (!funds || !state) return null;
  const { sub, plan, fired } = state;
  // A given time before the period (refused) or past it (a roll) is the locked path's to answer.
  if (sub.status !== 'active' || at >= sub.periodEnd || (input.at !== undefined && at < sub.periodStart) || plan.id !== sub.planId) return null;
  const settled = { budgeted: funds.budget.budget !== null, plan, sub, available: funds.available };
  const conv = state.conversation;
  if (conv && at - conv.lastActivityAt <= plan.sessionTimeoutMs) {
    // Both writes look rows up by their keys only: kept prepared (a generic plan is right).
    const touched = c.query(TOUCH_SQL, [at, input.customerId, input.conversationId, conv.sessionId, input.customerId, plan.id, sub.periodEnd], { prepare: 'write' });
    return { ...settled, session: 'existing', sessionId: conv.sessionId, counted: quiet(touched.then((r) => (r.length === 1 ? sub.sessionsUsed : null))) };
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
  return { ...settled, session: 'new', sessionId, counted: quiet(rows.then((r) => (r[0] ? Number(r[0].sessions_used) : null))) };
}

async function admitted(d: Decided | null): Promise<Optimistic | null> {
  if (!d) return null;
  const used = await d.counted;
  if (used === null) return null;
  return { budgeted: d.budgeted, admission: runAdmission(d.plan, d.sub, d.session, d.sessionId, used, d.available) };
}

/**
 * Several admissions in one transaction: every read leaves in one socket
 * write, then every write with COMMIT; one commit for the group. Writes go in
 * (customer, conversation) order, so two processes' groups take subscription
 * rows in the same order. A conversation row is contended only by two
 * messages of one conversation at once; should that deadlock, the server
 * aborts one group and its admissions run alone, as they do when a write
 * aborts its group (a concurrent first message took the conversation).
 */
async function admitGroup(q: QuotaCore, group: readonly Pending[]): Promise<GroupOutcome[]> {
  let decided: (Decided | null)[];
  try {
    decided = await q.write(async (c) => {
      const view = q.ledger.view(c);
      const reads = await Promise.all(group.map(({ input, at }) => Promise.all([readAdmissionFunds(view, input, at), readState(c, input.customerId, input.conversationId)])));
      const out = new Array<Decided | null>(group.length).fill(null);
      for (const i of writeOrder(group)) out[i] = decide(q, c, group[i]!, reads[i]!);
      return out;
    }, DEFERRED);
  } catch (e) {
    // Alone, an aborted write leaves the decision to the locked admission; in a group, each tries again alone.
    if (group.length === 1 && (e as { code?: unknown } | null)?.code === ABORTED) return [{ ok: true, value: null }];
    throw e;
  }
  return Promise.all(decided.map(async (d) => ({ ok: true as const, value: await admitted(d) })));
}

function writeOrder(group: readonly Pending[]): number[] {
  const order = group.map((_, i) => i);
  if (group.length > 1) {
    const key = (i: number) => group[i]!.input;
    order.sort((a, b) => compare(key(a).customerId, key(b).customerId) || compare(key(a).conversationId, key(b).conversationId));
  }
  return order;
}

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Most admissions one transaction carries. */
const MAX_GROUP = 64;
const groups = new WeakMap<QuotaCore, GroupCommitter<Pending>>();

/**
 * Admits without the subscription lock, or returns null for the locked
 * admission to decide. PostgreSQL only. Admissions arriving while another is
 * in flight wait for it and then go together (GroupCommitter): one
 * transaction and one commit for the lot, instead of one each.
 */
export async function admitOptimistically(q: QuotaCore, input: AdmitRunInput, at: number): Promise<Optimistic | null> {
  let committer = groups.get(q);
  if (!committer) {
    committer = new GroupCommitter<Pending>((group) => admitGroup(q, group), MAX_GROUP, () => false);
    groups.set(q, committer);
  }
  return (await committer.submit({ input, at })) as Optimistic | null;
}

/**
 * The write's outcome, marked handled: when the write fails, the transaction
 * reports it (its COMMIT fails with the same error) and this is never awaited.
 */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}
