import { createHash } from 'node:crypto';
import type { Row, SqlConnection } from '../ledger/dialect';
import type { Ledger } from '../ledger/types';

/**
 * The meter-event outbox table as a queue: leasing due rows, recording what
 * happened to them, counts. Delivery (outbox.ts) decides; this file holds the
 * SQL. The rows themselves are written by the ledger with each charge.
 */
export interface OutboxRow {
  id: string;
  customerId: string;
  eventName: string;
  value: bigint;
  occurredAt: number;
  attempts: number;
  aggId: string | null;
}

export interface QueueCounts {
  readonly pending: number;
  readonly due: number;
  readonly delivered: number;
  readonly failed: number;
  readonly oldestPendingAt: string | null;
  readonly lastErrors: Array<{ id: string; attempts: number; error: string }>;
}

/** One row's new state: status, attempts, next attempt, error. */
export interface RowUpdate {
  readonly id: string;
  readonly status: 'pending' | 'failed';
  readonly attempts: number;
  readonly nextAt: number;
  readonly error: string | null;
}

export interface LeaseOptions {
  readonly batchSize: number;
  readonly leaseMs: number;
  readonly aggregateWindowSeconds: number | null;
}

const inList = (n: number) => `(${Array.from({ length: n }, () => '?').join(', ')})`;
export const laneKey = (customerId: string, eventName: string) => `${customerId}\u0000${eventName}`;

function rowFrom(r: Row): OutboxRow {
  return {
    id: String(r.id),
    customerId: String(r.customer_id),
    eventName: String(r.event_name),
    value: BigInt(String(r.value)),
    occurredAt: Number(r.occurred_at),
    attempts: Number(r.attempts),
    aggId: r.agg_id === null || r.agg_id === undefined ? null : String(r.agg_id),
  };
}

export class OutboxQueue {
  constructor(private readonly ledger: Ledger) {}

  private get d() {
    return this.ledger.dialect;
  }

  /** Pending, delivered and failed counts, and why the last attempts failed. */
  async counts(now: number): Promise<QueueCounts> {
    return this.d.read(async (c) => {
      const counts = await c.query('SELECT status, COUNT(*) AS n, MIN(occurred_at) AS oldest FROM billing_stripe_outbox GROUP BY status');
      const [due] = await c.query("SELECT COUNT(*) AS n FROM billing_stripe_outbox WHERE status = 'pending' AND next_attempt_at <= ?", [now]);
      const errors = await c.query(
        "SELECT id, attempts, last_error FROM billing_stripe_outbox WHERE status IN ('pending', 'failed') AND last_error IS NOT NULL ORDER BY next_attempt_at DESC LIMIT 5",
      );
      const by = new Map(counts.map((r) => [String(r.status), r]));
      const n = (s: string) => Number(by.get(s)?.n ?? 0);
      const oldest = by.get('pending')?.oldest;
      return {
        pending: n('pending'),
        due: Number(due?.n ?? 0),
        delivered: n('delivered'),
        failed: n('failed'),
        oldestPendingAt: oldest === undefined || oldest === null ? null : new Date(Number(oldest)).toISOString(),
        lastErrors: errors.map((r) => ({ id: String(r.id), attempts: Number(r.attempts), error: String(r.last_error) })),
      };
    });
  }

  /** Puts failed rows back in the queue (after fixing what made Stripe refuse them). */
  async retryFailed(now: number): Promise<number> {
    return this.d.writeTransaction((c) =>
      c.run("UPDATE billing_stripe_outbox SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE status = 'failed'", [now]),
    );
  }

  /** Milliseconds until the next pending row is due (MAX_SAFE_INTEGER when none is pending). */
  async msUntilDue(now: number): Promise<number> {
    const [r] = await this.d.read((c) => c.query("SELECT MIN(next_attempt_at) AS t FROM billing_stripe_outbox WHERE status = 'pending'"));
    if (!r || r.t === null || r.t === undefined) return Number.MAX_SAFE_INTEGER;
    return Math.max(0, Number(r.t) - now);
  }

  /**
   * Leases due rows (freezing aggregation groups first): at most batchSize,
   * and at most a quarter of them for any one customer and meter while other
   * customers have rows waiting, so a heavy customer's backlog (which goes one
   * request at a time) does not hold the others back. Over-fetches candidates
   * to choose from.
   */
  async lease(now: number, o: LeaseOptions): Promise<OutboxRow[]> {
    const perLane = Math.max(10, Math.ceil(o.batchSize / 4));
    return this.d.writeTransaction(async (c) => {
      if (o.aggregateWindowSeconds) await this.freezeGroups(c, now, o.aggregateWindowSeconds);
      const candidates = (
        await c.query(
          `SELECT * FROM billing_stripe_outbox WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ? ${this.d.forUpdate}`,
          [now, o.batchSize * 4],
        )
      ).map(rowFrom);
      const taken = new Map<string, number>();
      const due: OutboxRow[] = [];
      const rest: OutboxRow[] = [];
      for (const r of candidates) {
        if (due.length >= o.batchSize) break;
        const lane = laneKey(r.customerId, r.eventName);
        const n = taken.get(lane) ?? 0;
        if (n >= perLane && r.aggId === null) {
          rest.push(r);
          continue;
        }
        taken.set(lane, n + 1);
        due.push(r);
      }
      // Room left (few customers have work): fill it, so a lone heavy customer still gets whole batches.
      due.push(...rest.slice(0, Math.max(0, o.batchSize - due.length)));
      // A group is only sent whole: pull in any of its rows the LIMIT cut off.
      const groups = [...new Set(due.map((r) => r.aggId).filter((g): g is string => g !== null))];
      const seen = new Set(due.map((r) => r.id));
      if (groups.length) {
        for (const r of await c.query(`SELECT * FROM billing_stripe_outbox WHERE status = 'pending' AND agg_id IN ${inList(groups.length)}`, groups)) {
          if (!seen.has(String(r.id))) due.push(rowFrom(r));
        }
      }
      for (let i = 0; i < due.length; i += 500) {
        const chunk = due.slice(i, i + 500);
        await c.run(`UPDATE billing_stripe_outbox SET next_attempt_at = ? WHERE id IN ${inList(chunk.length)}`, [now + o.leaseMs, ...chunk.map((r) => r.id)]);
      }
      return due;
    });
  }

  /** Marks rows delivered and writes the others' new state, in one transaction; rows no longer pending are left alone. */
  async record(now: number, deliveredIds: readonly string[], updates: readonly RowUpdate[]): Promise<void> {
    await this.d.writeTransaction(async (c) => {
      for (let i = 0; i < deliveredIds.length; i += 500) {
        const chunk = deliveredIds.slice(i, i + 500);
        await c.run(
          `UPDATE billing_stripe_outbox SET status = 'delivered', delivered_at = ?, attempts = attempts + 1, last_error = NULL WHERE status = 'pending' AND id IN ${inList(chunk.length)}`,
          [now, ...chunk],
        );
      }
      for (const u of updates) {
        await c.run("UPDATE billing_stripe_outbox SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ? AND status = 'pending'", [
          u.status, u.attempts, u.nextAt, u.error, u.id,
        ]);
      }
    });
  }

  /**
   * Freezes aggregation groups: due, ungrouped rows of one customer + meter +
   * window get one agg_id, derived from their ids, committed before anything
   * is sent. The current (still open) window is left alone until it closes.
   */
  private async freezeGroups(c: SqlConnection, now: number, windowSeconds: number): Promise<void> {
    const windowMs = windowSeconds * 1000;
    const openWindowStart = Math.floor(now / windowMs) * windowMs;
    const rows = await c.query(
      `SELECT id, customer_id, event_name, occurred_at FROM billing_stripe_outbox
        WHERE status = 'pending' AND agg_id IS NULL AND next_attempt_at <= ? AND occurred_at < ?
        ORDER BY id LIMIT 5000 ${this.d.forUpdate}`,
      [now, openWindowStart],
    );
    const groups = new Map<string, string[]>();
    for (const r of rows) {
      const w = Math.floor(Number(r.occurred_at) / windowMs);
      const k = `${String(r.customer_id)}\u0000${String(r.event_name)}\u0000${w}`;
      groups.set(k, [...(groups.get(k) ?? []), String(r.id)]);
    }
    for (const ids of groups.values()) {
      const aggId = `fba_${createHash('sha256').update(ids.sort().join(',')).digest('hex').slice(0, 48)}`;
      for (let i = 0; i < ids.length; i += 500) {
        const chunk = ids.slice(i, i + 500);
        await c.run(`UPDATE billing_stripe_outbox SET agg_id = ? WHERE agg_id IS NULL AND id IN ${inList(chunk.length)}`, [aggId, ...chunk]);
      }
    }
  }
}
