import type Stripe from 'stripe';
import type { Row, SqlConnection } from '../ledger/dialect';
import type { Ledger } from '../ledger/types';
import type { BackoffOptions } from './retry';

/**
 * A durable Stripe outbox table as a queue: leasing due rows, recording what
 * happened to them, counts, requeueing failed rows. The meter events
 * (meter-event-queue.ts) and the invoice items (invoice-items.ts) are two such
 * tables; the workers decide what to send and how a failure counts, this file
 * holds the SQL they share.
 *
 * Every outbox table has `id`, `status` ('pending' | 'delivered' | 'failed'),
 * `attempts`, `next_attempt_at` (also the lease: a leased row is pushed past
 * it), `last_error` and `delivered_at`. A row leaves 'pending' only here, and
 * only to 'delivered' or 'failed'; `retryFailed` is the one way back.
 */
export interface OutboxTable<R> {
  readonly name: string;
  /** The column whose earliest pending value is reported as `oldestPendingAt` (when it happened, or when it was queued). */
  readonly oldestColumn: string;
  /** Where a delivered row keeps the id of the object Stripe made for it, if the table has such a column. */
  readonly receiptColumn?: string;
  readonly rowFrom: (r: Row) => R;
}

export interface OutboxCounts {
  readonly pending: number;
  readonly delivered: number;
  readonly failed: number;
  readonly oldestPendingAt: string | null;
  readonly lastErrors: Array<{ id: string; attempts: number; error: string }>;
}

/** The counts with how many pending rows are due now. */
export interface QueueCounts extends OutboxCounts {
  readonly due: number;
}

/** One row's new state: status, attempts, next attempt, error (and, when delivered, what Stripe made of it). */
export interface RowUpdate {
  readonly id: string;
  readonly status: 'pending' | 'delivered' | 'failed';
  readonly attempts: number;
  readonly nextAt: number;
  readonly error: string | null;
  readonly receipt?: string;
}

/** What every worker draining an outbox table into Stripe is configured with. */
export interface OutboxWorkerOptions {
  readonly stripe: Stripe;
  /** Attempts before a row counts as failed (default 20; `stripe retry-failed` puts failed rows back). */
  readonly maxAttempts?: number;
  /** How long a leased row is reserved for this worker (default 30 s). */
  readonly leaseMs?: number;
  readonly backoff?: BackoffOptions;
  /** Create Stripe customers for unmapped ledger customers (default true); otherwise their rows wait. */
  readonly createCustomers?: boolean;
  /** How long rows of a customer without a Stripe customer (not linked, or the create failed) wait before the next try (default 60 s). */
  readonly customerRetryMs?: number;
  readonly clock?: () => number;
  readonly random?: () => number;
}

export const inList = (n: number) => `(${Array.from({ length: n }, () => '?').join(', ')})`;

/** Runs `f` over `items` in chunks small enough for one statement's parameters. */
export async function inChunks<T>(items: readonly T[], f: (chunk: T[]) => Promise<unknown>): Promise<void> {
  for (let i = 0; i < items.length; i += 500) await f(items.slice(i, i + 500));
}

export class OutboxQueue<R extends { id: string }> {
  constructor(
    protected readonly ledger: Ledger,
    protected readonly table: OutboxTable<R>,
  ) {}

  protected get d() {
    return this.ledger.dialect;
  }

  /** Pending, delivered and failed counts, and why the last attempts failed. */
  counts(): Promise<OutboxCounts> {
    return this.d.read((c) => this.countsIn(c, null));
  }

  /** The counts, and how many pending rows are due at `now` (read together). */
  async countsWithDue(now: number): Promise<QueueCounts> {
    return this.d.read(async (c) => {
      const { pending, delivered, failed, oldestPendingAt, lastErrors, due } = await this.countsIn(c, now);
      return { pending, due: due ?? 0, delivered, failed, oldestPendingAt, lastErrors };
    });
  }

  private async countsIn(c: SqlConnection, now: number | null): Promise<OutboxCounts & { due: number | null }> {
    const t = this.table.name;
    const counts = await c.query(`SELECT status, COUNT(*) AS n, MIN(${this.table.oldestColumn}) AS oldest FROM ${t} GROUP BY status`);
    const [due] = now === null ? [] : await c.query(`SELECT COUNT(*) AS n FROM ${t} WHERE status = 'pending' AND next_attempt_at <= ?`, [now]);
    const errors = await c.query(
      `SELECT id, attempts, last_error FROM ${t} WHERE status IN ('pending', 'failed') AND last_error IS NOT NULL ORDER BY next_attempt_at DESC LIMIT 5`,
    );
    const by = new Map(counts.map((r) => [String(r.status), r]));
    const n = (s: string) => Number(by.get(s)?.n ?? 0);
    const oldest = by.get('pending')?.oldest;
    return {
      pending: n('pending'),
      due: now === null ? null : Number(due?.n ?? 0),
      delivered: n('delivered'),
      failed: n('failed'),
      oldestPendingAt: oldest === undefined || oldest === null ? null : new Date(Number(oldest)).toISOString(),
      lastErrors: errors.map((r) => ({ id: String(r.id), attempts: Number(r.attempts), error: String(r.last_error) })),
    };
  }

  /** Puts failed rows back in the queue (after fixing what made Stripe refuse them); their ids, and so their keys, stay. */
  retryFailed(now: number): Promise<number> {
    return this.d.writeTransaction((c) =>
      c.run(`UPDATE ${this.table.name} SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE status = 'failed'`, [now]),
    );
  }

  /** Milliseconds until the next pending row is due (MAX_SAFE_INTEGER when none is pending). */
  async msUntilDue(now: number): Promise<number> {
    const [r] = await this.d.read((c) => c.query(`SELECT MIN(next_attempt_at) AS t FROM ${this.table.name} WHERE status = 'pending'`));
    if (!r || r.t === null || r.t === undefined) return Number.MAX_SAFE_INTEGER;
    return Math.max(0, Number(r.t) - now);
  }

  /** Leases up to `limit` due rows, oldest due first (pushing their next attempt past the lease), and returns them. */
  leaseDue(now: number, limit: number, leaseMs: number): Promise<R[]> {
    return this.d.writeTransaction(async (c) => {
      const rows = await this.selectDue(c, now, limit);
      await this.extendLease(c, rows, now + leaseMs);
      return rows;
    });
  }

  /** Due rows, oldest due first, locked for this transaction where the database can. */
  protected async selectDue(c: SqlConnection, now: number, limit: number): Promise<R[]> {
    const rows = await c.query(
      `SELECT * FROM ${this.table.name} WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ? ${this.d.forUpdate}`,
      [now, limit],
    );
    return rows.map(this.table.rowFrom);
  }

  /** Reserves rows for this worker until `until`. */
  protected async extendLease(c: SqlConnection, rows: readonly R[], until: number): Promise<void> {
    await inChunks(rows, (chunk) => c.run(`UPDATE ${this.table.name} SET next_attempt_at = ? WHERE id IN ${inList(chunk.length)}`, [until, ...chunk.map((r) => r.id)]));
  }

  /** Makes leased rows that were not sent due again at `now`, instead of after their lease. */
  async release(now: number, ids: readonly string[]): Promise<void> {
    await this.d.writeTransaction((c) =>
      inChunks(ids, (chunk) => c.run(`UPDATE ${this.table.name} SET next_attempt_at = ? WHERE status = 'pending' AND id IN ${inList(chunk.length)}`, [now, ...chunk])),
    );
  }

  /**
   * Marks `deliveredIds` delivered (one attempt more) and writes the others'
   * new state, in one transaction; rows no longer pending are left alone.
   * An update to 'delivered' sets `delivered_at` too (and the receipt column).
   */
  async record(now: number, deliveredIds: readonly string[], updates: readonly RowUpdate[]): Promise<void> {
    const t = this.table.name;
    const receipt = this.table.receiptColumn;
    await this.d.writeTransaction(async (c) => {
      await inChunks(deliveredIds, (chunk) =>
        c.run(
          `UPDATE ${t} SET status = 'delivered', delivered_at = ?, attempts = attempts + 1, last_error = NULL WHERE status = 'pending' AND id IN ${inList(chunk.length)}`,
          [now, ...chunk],
        ),
      );
      for (const u of updates) {
        const delivered = u.status === 'delivered';
        await c.run(
          `UPDATE ${t} SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ?${delivered ? ', delivered_at = ?' : ''}${receipt ? `, ${receipt} = COALESCE(?, ${receipt})` : ''} WHERE id = ? AND status = 'pending'`,
          [u.status, u.attempts, u.nextAt, u.error, ...(delivered ? [now] : []), ...(receipt ? [u.receipt ?? null] : []), u.id],
        );
      }
    });
  }
}
