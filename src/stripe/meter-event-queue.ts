import { createHash } from 'node:crypto';
import type { Row, SqlConnection } from '../ledger/dialect';
import type { Ledger } from '../ledger/types';
import { inChunks, inList, OutboxQueue, type OutboxTable } from './outbox-queue';

/**
 * The meter-event outbox (billing_stripe_outbox): what its lease adds to the
 * shared outbox queue — fairness between customers and aggregation groups.
 * Delivery (outbox.ts) decides; the rows themselves are written by the ledger
 * with each charge.
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

export interface LeaseOptions {
  readonly batchSize: number;
  readonly leaseMs: number;
  readonly aggregateWindowSeconds: number | null;
}

export const laneKey = (customerId: string, eventName: string) => `${customerId}\u0000${eventName}`;

const TABLE = 'billing_stripe_outbox';

const meterEvents: OutboxTable<OutboxRow> = {
  name: TABLE,
  oldestColumn: 'occurred_at',
  rowFrom: (r: Row) => ({
    id: String(r.id),
    customerId: String(r.customer_id),
    eventName: String(r.event_name),
    value: BigInt(String(r.value)),
    occurredAt: Number(r.occurred_at),
    attempts: Number(r.attempts),
    aggId: r.agg_id === null || r.agg_id === undefined ? null : String(r.agg_id),
  }),
};

export class MeterEventQueue extends OutboxQueue<OutboxRow> {
  constructor(ledger: Ledger) {
    super(ledger, meterEvents);
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
      const candidates = await this.selectDue(c, now, o.batchSize * 4);
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
        for (const r of await c.query(`SELECT * FROM ${TABLE} WHERE status = 'pending' AND agg_id IN ${inList(groups.length)}`, groups)) {
          if (!seen.has(String(r.id))) due.push(meterEvents.rowFrom(r));
        }
      }
      await this.extendLease(c, due, now + o.leaseMs);
      return due;
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
      `SELECT id, customer_id, event_name, occurred_at FROM ${TABLE}
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
      await inChunks(ids, (chunk) => c.run(`UPDATE ${TABLE} SET agg_id = ? WHERE agg_id IS NULL AND id IN ${inList(chunk.length)}`, [aggId, ...chunk]));
    }
  }
}
