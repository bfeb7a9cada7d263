import { randomUUID } from 'node:crypto';
import type Stripe from 'stripe';
import type { Ledger } from '../ledger/types';
import { ensureStripeCustomer, stripeCustomersFor } from './customers';
import { StripeIntegrationError } from './errors';
import { type LaneOutcome, runLanes } from './lanes';
import { laneKey, MeterEventQueue, type OutboxRow } from './meter-event-queue';
import type { OutboxWorkerOptions, QueueCounts, RowUpdate } from './outbox-queue';
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
export interface OutboxDeliveryOptions extends OutboxWorkerOptions {
  /** Rows leased per round (default 200). */
  readonly batchSize?: number;
  /** Customers (customer + meter pairs) sent to in parallel, one request each at a time (default 16). */
  readonly concurrency?: number;
  /** Requests a second (default 80; Stripe's meter-event endpoint takes 1,000/s in live mode; in test mode it shares the 25/s basic limit). */
  readonly ratePerSecond?: number;
  readonly breaker?: BreakerOptions;
  /** Aggregate per customer + meter + window of this many seconds (e.g. 3600); off by default. */
  readonly aggregateWindowSeconds?: number;
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

export interface OutboxStatus extends QueueCounts {
  readonly breaker: 'closed' | 'open' | 'half-open';
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
/** Stripe's rule is per customer and meter: the lane a send waits in. */
const laneOf = (s: Send) => laneKey(s.customerId, s.eventName);

export class OutboxDelivery {
  readonly breaker: CircuitBreaker;
  private readonly limiter: RateLimiter;
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly stripe: Stripe;
  private readonly queue: MeterEventQueue;
  /** Per customer + meter: when it may be called again after a 429 (real time), across rounds. */
  private readonly laneReadyAt = new Map<string, number>();
  /** Per customer + meter: 429s in a row, for the backoff when Stripe gives no Retry-After. */
  private readonly laneStrikes = new Map<string, number>();
  private readonly o: Required<Omit<OutboxDeliveryOptions, 'stripe' | 'backoff' | 'breaker' | 'clock' | 'random' | 'aggregateWindowSeconds'>> & {
    aggregateWindowSeconds: number | null;
    backoff: BackoffOptions;
  };

  constructor(
    private readonly ledger: Ledger,
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
    this.queue = new MeterEventQueue(ledger);
  }

  /** Pending, delivered and failed counts, why the last attempts failed, and the breaker. */
  async status(): Promise<OutboxStatus> {
    const now = this.clock();
    return { ...(await this.queue.countsWithDue(now)), breaker: this.breaker.state(now) };
  }

  /** Puts failed rows back in the queue (after fixing what made Stripe refuse them). */
  retryFailed(): Promise<number> {
    return this.queue.retryFailed(this.clock());
  }

  /** Leases due rows and delivers them once: one request at a time per customer and meter, many customers at once. */
  async deliverRound(): Promise<RoundResult> {
    const now = this.clock();
    const empty = { leased: 0, requests: 0, throttled: 0, delivered: 0, duplicates: 0, retried: 0, failed: 0, waiting: 0 };
    if (this.breaker.waitMs(now) > 0) return empty;
    const rows = await this.queue.lease(now, this.o);
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
    const updates: RowUpdate[] = [];
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
          updates.push({ id: r.id, status: 'pending', attempts: r.attempts, nextAt: now + (delayMs ?? 0), error: error ?? null });
        } else if (verdict === 'rejected' || r.attempts + 1 >= this.o.maxAttempts) {
          result.failed += 1;
          updates.push({ id: r.id, status: 'failed', attempts: r.attempts + 1, nextAt: now, error: error ?? null });
        } else {
          result.retried += 1;
          updates.push({ id: r.id, status: 'pending', attempts: r.attempts + 1, nextAt: now + backoffMs(r.attempts + 1, this.o.backoff, this.random), error: error ?? null });
        }
      }
    }
    await this.queue.record(now, deliveredIds, updates);
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
        await sleep(breakerWait > 0 ? breakerWait : Math.max(20, Math.min(idle, await this.queue.msUntilDue(this.clock()))), opts.signal);
      }
    }
    return this.status();
  }


}
