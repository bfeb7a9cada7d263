import { createHash, randomUUID } from 'node:crypto';
import type Stripe from 'stripe';
import type { Row, SqlConnection } from '../ledger/dialect';
import type { SqlLedger } from '../ledger/sql-ledger';
import { ensureStripeCustomer, stripeCustomersFor } from './customers';
import { StripeIntegrationError } from './errors';
import { type LaneOutcome, runLanes } from './lanes';
import {
  type BackoffOptions,
  backoffMs,
  type BreakerOptions,
  CircuitBreaker,
  classifyFailure,
  factsOf,
  RateLimiter,
  retryAfterMs,
} from './retry';

/**
 * Delivers the meter-event outbox to Stripe.
 *
 * - Rows are leased (next_attempt_at pushed ahead) in a write transaction
 *   before they are sent, so two sync workers rarely send the same row; when
 *   they do — or a worker is killed after Stripe answered but before the row
 *   was marked — the resend reuses the row's identifier and Stripe rejects it
 *   as a duplicate, which counts as delivered. (Stripe enforces identifier
 *   uniqueness for 24 h; a lease is seconds.)
 * - The identifier is what prevents double counting, so every attempt carries
 *   a fresh idempotency key `fbme:<identifier>:<uuid>`. Reusing one key would
 *   be wrong here: Stripe saves the result of a request that began executing
 *   under its key, a 500 included, and replays it for that key for 24 h.
 * - One request at a time per customer and meter (Stripe's rule for this
 *   endpoint), many customers in parallel (`concurrency`), under a global
 *   rate limit. A 429 makes only that customer and meter wait (Retry-After
 *   when given, else backoff) and never trips the circuit breaker, which
 *   counts server failures (5xx, no answer) only.
 * - After an outage the breaker lets one probe through; every other call of
 *   the round waits for its result and goes on at once when it succeeds.
 * - The SDK's own retries are off (maxNetworkRetries 0): failed events are
 *   retried with capped exponential backoff and 50–100 % jitter.
 * - Optional aggregation: pending rows of one customer, meter and time window
 *   are frozen into a group (agg_id, committed before the send) and sent as one
 *   event whose identifier is the group id, so a restart resends the same group.
 */
export interface OutboxDeliveryOptions {
  readonly stripe: Stripe;
  /** Rows leased per round (default 200). */
  readonly batchSize?: number;
  /** Customers (customer + meter pairs) sent to in parallel, one request each at a time (default 16). */
  readonly concurrency?: number;
  /** Requests a second (default 80; Stripe's meter-event endpoint takes 1,000/s in live mode; in test mode it shares the 25/s basic limit). */
  readonly ratePerSecond?: number;
  readonly backoff?: BackoffOptions;
  readonly breaker?: BreakerOptions;
  /** Attempts before a row counts as failed (default 20; `stripeRetryFailed` puts failed rows back). */
  readonly maxAttempts?: number;
  /** How long a leased row is reserved for this worker (default 30 s). */
  readonly leaseMs?: number;
  /** Aggregate per customer + meter + window of this many seconds (e.g. 3600); off by default. */
  readonly aggregateWindowSeconds?: number;
  /** Create Stripe customers for unmapped ledger customers (default true); otherwise their rows wait. */
  readonly createCustomers?: boolean;
  /** How long rows of a customer without a Stripe customer (not linked, or the create failed) wait before the next try (default 60 s). */
  readonly customerRetryMs?: number;
  readonly clock?: () => number;
  readonly random?: () => number;
}

export interface RoundResult {
  readonly leased: number;
  readonly requests: number;
  /** Requests answered 429 (the customer and meter waited; not an attempt against the event). */
  readonly throttled: number;
  readonly delivered: number;
  readonly duplicates: number;
  readonly retried: number;
  readonly failed: number;
  readonly waiting: number;
}

export interface OutboxStatus {
  readonly pending: number;
  readonly due: number;
  readonly delivered: number;
  readonly failed: number;
  readonly oldestPendingAt: string | null;
  readonly lastErrors: Array<{ id: string; attempts: number; error: string }>;
  readonly breaker: 'closed' | 'open' | 'half-open';
}

interface OutboxRow {
  id: string;
  customerId: string;
  eventName: string;
  value: bigint;
  occurredAt: number;
  attempts: number;
  aggId: string | null;
}

interface Done {
  send: Send;
  verdict: 'delivered' | 'duplicate' | 'retry' | 'rejected' | 'waiting';
  error?: string;
  /** For `waiting`: when the rows are due again. */
  delayMs?: number;
}

/** A unit of sending: one row, or an aggregated group of rows. */
interface Send {
  identifier: string;
  customerId: string;
  eventName: string;
  value: bigint;
  occurredAt: number;
  rows: OutboxRow[];
  /** Why its last request this round did not go through (a 429), if it is given back. */
  lastError?: string;
}

const DAY_S = 86_400;
/** Stripe takes meter events up to 35 days old and 5 minutes ahead; keep an hour of margin on the old side. */
const OLDEST_S = 35 * DAY_S - 3600;

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

/** Seconds-since-epoch timestamp Stripe will accept for an event that happened at `occurredMs`. */
export function meterTimestamp(occurredMs: number, nowMs: number): number {
  const now = Math.floor(nowMs / 1000);
  const ts = Math.floor(occurredMs / 1000);
  if (ts < now - OLDEST_S) return now - OLDEST_S;
  if (ts > now + 60) return now;
  return ts;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
const inList = (n: number) => `(${Array.from({ length: n }, () => '?').join(', ')})`;
/** Stripe's rule is per customer and meter: the lane a send waits in. */
const laneOf = (s: Send) => `${s.customerId}\u0000${s.eventName}`;

export class OutboxDelivery {
  readonly breaker: CircuitBreaker;
  private readonly limiter: RateLimiter;
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly stripe: Stripe;
  /** Per customer + meter: when it may be called again after a 429 (real time), across rounds. */
  private readonly laneReadyAt = new Map<string, number>();
  /** Per customer + meter: 429s in a row, for the backoff when Stripe gives no Retry-After. */
  private readonly laneStrikes = new Map<string, number>();
  private readonly o: Required<Omit<OutboxDeliveryOptions, 'stripe' | 'backoff' | 'breaker' | 'clock' | 'random' | 'aggregateWindowSeconds'>> & {
    aggregateWindowSeconds: number | null;
    backoff: BackoffOptions;
  };

  constructor(
    private readonly ledger: SqlLedger,
    opts: OutboxDeliveryOptions,
  ) {
    this.clock = opts.clock ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.breaker = new CircuitBreaker(opts.breaker);
    this.o = {
      batchSize: opts.batchSize ?? 200,
      concurrency: opts.concurrency ?? 16,
      ratePerSecond: opts.ratePerSecond ?? 80,
      maxAttempts: opts.maxAttempts ?? 20,
      leaseMs: opts.leaseMs ?? 30_000,
      createCustomers: opts.createCustomers ?? true,
      customerRetryMs: opts.customerRetryMs ?? 60_000,
      aggregateWindowSeconds: opts.aggregateWindowSeconds ?? null,
      backoff: opts.backoff ?? {},
    };
    // Rate limiting is about real time, whatever clock the rows are judged by.
    this.limiter = new RateLimiter(this.o.ratePerSecond, Math.max(1, Math.ceil(this.o.ratePerSecond / 10)), Date.now());
    this.stripe = opts.stripe;
  }

  private get d() {
    return this.ledger.dialect;
  }

  /** Pending, delivered and failed counts, and why the last attempts failed. */
  async status(): Promise<OutboxStatus> {
    const now = this.clock();
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
        breaker: this.breaker.state(now),
      };
    });
  }

  /** Puts failed rows back in the queue (after fixing what made Stripe refuse them). */
  async retryFailed(): Promise<number> {
    const now = this.clock();
    return this.d.writeTransaction((c) =>
      c.run("UPDATE billing_stripe_outbox SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE status = 'failed'", [now]),
    );
  }

  /**
   * Leases due rows (freezing aggregation groups first): at most batchSize,
   * and at most a quarter of them for any one customer and meter while other
   * customers have rows waiting, so a heavy customer's backlog (which goes one
   * request at a time) does not hold the others back. Over-fetches candidates
   * to choose from.
   */
  private async lease(now: number): Promise<OutboxRow[]> {
    const perLane = Math.max(10, Math.ceil(this.o.batchSize / 4));
    return this.d.writeTransaction(async (c) => {
      if (this.o.aggregateWindowSeconds) await this.freezeGroups(c, now);
      const candidates = (
        await c.query(
          `SELECT * FROM billing_stripe_outbox WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT ? ${this.d.forUpdate}`,
          [now, this.o.batchSize * 4],
        )
      ).map(rowFrom);
      const taken = new Map<string, number>();
      const due: OutboxRow[] = [];
      const rest: OutboxRow[] = [];
      for (const r of candidates) {
        if (due.length >= this.o.batchSize) break;
        const lane = `${r.customerId}\u0000${r.eventName}`;
        const n = taken.get(lane) ?? 0;
        if (n >= perLane && r.aggId === null) {
          rest.push(r);
          continue;
        }
        taken.set(lane, n + 1);
        due.push(r);
      }
      // Room left (few customers have work): fill it, so a lone heavy customer still gets whole batches.
      due.push(...rest.slice(0, Math.max(0, this.o.batchSize - due.length)));
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
        await c.run(`UPDATE billing_stripe_outbox SET next_attempt_at = ? WHERE id IN ${inList(chunk.length)}`, [now + this.o.leaseMs, ...chunk.map((r) => r.id)]);
      }
      return due;
    });
  }

  /** Leases due rows and delivers them once: one request at a time per customer and meter, many customers at once. */
  async deliverRound(): Promise<RoundResult> {
    const now = this.clock();
    const empty = { leased: 0, requests: 0, throttled: 0, delivered: 0, duplicates: 0, retried: 0, failed: 0, waiting: 0 };
    if (this.breaker.waitMs(now) > 0) return empty;
    const rows = await this.lease(now);
    if (rows.length === 0) return empty;

    const result = { ...empty, leased: rows.length };
    const done: Done[] = [];
    const sends: Send[] = [];
    const customers = await this.resolveCustomers([...new Set(rows.map((r) => r.customerId))]);
    for (const send of this.toSends(rows)) {
      if (!customers.has(send.customerId)) {
        done.push({ send, verdict: 'waiting', delayMs: this.o.customerRetryMs, error: `customer ${send.customerId} has no Stripe customer (link it or allow createCustomers)` });
      } else if (send.value === 0n) {
        // An aggregated group whose refunds cancelled its charges: nothing to tell Stripe.
        done.push({ send, verdict: 'delivered' });
      } else {
        sends.push(send);
      }
    }

    let fatal: unknown = null;
    const attempt = async (send: Send, probe: boolean): Promise<LaneOutcome> => {
      for (let wait = this.limiter.take(Date.now()); wait > 0; wait = this.limiter.take(Date.now())) await sleep(wait);
      const ts = meterTimestamp(send.occurredAt, this.clock());
      result.requests += 1;
      try {
        await this.stripe.billing.meterEvents.create(
          {
            event_name: send.eventName,
            identifier: send.identifier,
            timestamp: ts,
            payload: { stripe_customer_id: customers.get(send.customerId)!, value: send.value.toString() },
          },
          // A fresh key per attempt: a key's saved result (even a 500) would only be replayed.
          { idempotencyKey: `fbme:${send.identifier}:${randomUUID()}` },
        );
        this.breaker.success();
        this.laneStrikes.delete(laneOf(send));
        done.push({ send, verdict: 'delivered' });
        return { kind: 'next' };
      } catch (e) {
        const facts = factsOf(e);
        const verdict = classifyFailure(facts);
        const error = `${facts.statusCode ?? facts.type ?? 'error'}: ${facts.message ?? String(e)}`.slice(0, 500);
        switch (verdict) {
          case 'duplicate':
            this.breaker.success();
            done.push({ send, verdict: 'duplicate' });
            return { kind: 'next' };
          case 'fatal':
            this.breaker.failure(this.clock());
            fatal = e;
            done.push({ send, verdict: 'waiting', delayMs: 0, error: facts.message ?? 'authentication failed' });
            return { kind: 'halt' };
          case 'throttled': {
            // Stripe is up and answering: a probe that gets a 429 has done its job.
            if (probe) this.breaker.success();
            result.throttled += 1;
            const lane = laneOf(send);
            const strikes = (this.laneStrikes.get(lane) ?? 0) + 1;
            this.laneStrikes.set(lane, strikes);
            const waitMs = retryAfterMs(facts.retryAfterHeader) ?? backoffMs(strikes, this.o.backoff, this.random);
            send.lastError = error;
            return { kind: 'throttled', waitMs };
          }
          case 'retry':
            this.breaker.failure(this.clock());
            done.push({ send, verdict: 'retry', error });
            return { kind: 'next' };
          case 'rejected':
            this.breaker.success(); // Stripe answered sensibly; the event itself is bad
            done.push({ send, verdict: 'rejected', error });
            return { kind: 'next' };
        }
      }
    };
    const run = await runLanes(sends, laneOf, attempt, {
      workers: this.o.concurrency,
      breaker: this.breaker,
      clock: this.clock,
      deadline: Date.now() + this.o.leaseMs / 2,
      readyAt: this.laneReadyAt,
    });
    // Not attempts: their attempt counts stay, and they are due again at once (or after their customer's wait).
    for (const send of run.unattempted) done.push({ send, verdict: 'waiting', delayMs: 0, error: send.lastError ?? 'not attempted' });
    for (const { item: send, delayMs } of run.deferred) done.push({ send, verdict: 'waiting', delayMs, error: send.lastError ?? 'rate limited' });

    await this.record(done, result);
    if (fatal !== null) {
      throw new StripeIntegrationError('STRIPE_AUTH_FAILED', `Stripe refused the API key: ${factsOf(fatal).message ?? ''}`, { statusCode: factsOf(fatal).statusCode });
    }
    return result;
  }

  private async record(
    done: Done[],
    result: { delivered: number; duplicates: number; retried: number; failed: number; waiting: number },
  ): Promise<void> {
    const now = this.clock();
    const deliveredIds: string[] = [];
    const updates: Array<[string, number, number, string | null, string]> = []; // status, attempts, next, error, id
    for (const { send, verdict, error, delayMs } of done) {
      if (verdict === 'delivered' || verdict === 'duplicate') {
        deliveredIds.push(...send.rows.map((r) => r.id));
        if (verdict === 'delivered') result.delivered += send.rows.length;
        else result.duplicates += send.rows.length;
        continue;
      }
      for (const r of send.rows) {
        if (verdict === 'waiting') {
          result.waiting += 1;
          updates.push(['pending', r.attempts, now + (delayMs ?? 0), error ?? null, r.id]);
        } else if (verdict === 'rejected' || r.attempts + 1 >= this.o.maxAttempts) {
          result.failed += 1;
          updates.push(['failed', r.attempts + 1, now, error ?? null, r.id]);
        } else {
          result.retried += 1;
          updates.push(['pending', r.attempts + 1, now + backoffMs(r.attempts + 1, this.o.backoff, this.random), error ?? null, r.id]);
        }
      }
    }
    await this.d.writeTransaction(async (c) => {
      for (let i = 0; i < deliveredIds.length; i += 500) {
        const chunk = deliveredIds.slice(i, i + 500);
        await c.run(
          `UPDATE billing_stripe_outbox SET status = 'delivered', delivered_at = ?, attempts = attempts + 1, last_error = NULL WHERE status = 'pending' AND id IN ${inList(chunk.length)}`,
          [now, ...chunk],
        );
      }
      for (const [status, attempts, nextAt, error, id] of updates) {
        await c.run("UPDATE billing_stripe_outbox SET status = ?, attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ? AND status = 'pending'", [
          status, attempts, nextAt, error, id,
        ]);
      }
    });
  }

  private toSends(rows: OutboxRow[]): Send[] {
    const groups = new Map<string, OutboxRow[]>();
    const sends: Send[] = [];
    for (const r of rows) {
      if (r.aggId === null) {
        sends.push({ identifier: r.id, customerId: r.customerId, eventName: r.eventName, value: r.value, occurredAt: r.occurredAt, rows: [r] });
      } else {
        groups.set(r.aggId, [...(groups.get(r.aggId) ?? []), r]);
      }
    }
    for (const [aggId, members] of groups) {
      const first = members[0]!;
      sends.push({
        identifier: aggId,
        customerId: first.customerId,
        eventName: first.eventName,
        value: members.reduce((s, r) => s + r.value, 0n),
        occurredAt: Math.max(...members.map((r) => r.occurredAt)),
        rows: members,
      });
    }
    return sends;
  }

  /**
   * Freezes aggregation groups: due, ungrouped rows of one customer + meter +
   * window get one agg_id, derived from their ids, committed before anything
   * is sent. The current (still open) window is left alone until it closes.
   */
  private async freezeGroups(c: SqlConnection, now: number): Promise<void> {
    const windowMs = this.o.aggregateWindowSeconds! * 1000;
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

  private async resolveCustomers(customerIds: string[]): Promise<Map<string, string>> {
    const map = await stripeCustomersFor(this.ledger, customerIds);
    if (!this.o.createCustomers) return map;
    for (const id of customerIds) {
      if (map.has(id)) continue;
      try {
        map.set(id, await ensureStripeCustomer(this.ledger, this.stripe, id));
      } catch (e) {
        const f = factsOf(e);
        if (classifyFailure(f) === 'fatal') throw new StripeIntegrationError('STRIPE_AUTH_FAILED', `Stripe refused the API key: ${f.message ?? ''}`);
        // Left unmapped: its rows wait and are retried next round.
      }
    }
    return map;
  }

  /**
   * Delivers until nothing is pending (`once`), or forever until `signal`
   * aborts (`watch`). Sleeps through backoff and open-breaker periods.
   */
  async run(opts: { watch?: boolean; signal?: AbortSignal; idleMs?: number; timeoutMs?: number; onProgress?: (p: RoundResult & { status: OutboxStatus }) => void } = {}): Promise<OutboxStatus> {
    const started = this.clock();
    const idle = opts.idleMs ?? 1000;
    for (;;) {
      if (opts.signal?.aborted) break;
      const round = await this.deliverRound();
      const status = await this.status();
      if (round.leased > 0) opts.onProgress?.({ ...round, status });
      if (!opts.watch && status.pending === 0) return status;
      if (!opts.watch && opts.timeoutMs !== undefined && this.clock() - started > opts.timeoutMs) return status;
      if (round.leased === 0 || round.requests === 0) {
        // An open breaker decides alone when the next call may go (its probe); otherwise the next due row does.
        const breakerWait = this.breaker.waitMs(this.clock());
        await sleep(breakerWait > 0 ? breakerWait : Math.max(20, Math.min(idle, await this.msUntilDue())), opts.signal);
      }
    }
    return this.status();
  }

  private async msUntilDue(): Promise<number> {
    const [r] = await this.d.read((c) => c.query("SELECT MIN(next_attempt_at) AS t FROM billing_stripe_outbox WHERE status = 'pending'"));
    if (!r || r.t === null || r.t === undefined) return Number.MAX_SAFE_INTEGER;
    return Math.max(0, Number(r.t) - this.clock());
  }
}
