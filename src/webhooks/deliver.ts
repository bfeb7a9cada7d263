import type { Dialect, Row } from '../ledger/dialect';
import { attempt, type AttemptOptions, type Outcome } from './attempt';
import { DEFAULT_RETRY, type RetryPolicy } from './retry';
import { dropExpiredSecrets } from './secrets';

export interface DelivererOptions {
  readonly retry?: RetryPolicy;
  readonly clock?: () => number;
  /** Per-request timeout. */
  readonly timeoutMs?: number;
  /** Most deliveries in flight at once from this deliverer, over all endpoints (default 50). */
  readonly batch?: number;
  /** Most deliveries in flight at once to one endpoint (default 10), so one receiver's backlog cannot take the whole batch. */
  readonly perEndpoint?: number;
  /** How long a claim hides a delivery from other deliverers (covers a crash mid-request). */
  readonly leaseMs?: number;
  readonly log?: (level: 'info' | 'warn', msg: string, fields: Record<string, unknown>) => void;
  readonly random?: () => number;
}

export interface PassResult {
  readonly attempted: number;
  readonly delivered: number;
  readonly failed: number;
  readonly retrying: number;
}

/** Endpoints read per claim statement (a UNION ALL of one small indexed read each). */
const ENDPOINTS_PER_STATEMENT = 50;

/**
 * Delivers due webhook deliveries, at least once. A delivery is claimed by
 * pushing its next_attempt_at a lease ahead with a compare-and-set, so many
 * deliverers (serve replicas, `endpoints deliver --watch`) can run at once;
 * a deliverer killed mid-request leaves the claim to expire and the delivery
 * is sent again with the same webhook-id.
 *
 * Endpoints are independent lanes. A pass used to send everything it claimed
 * and wait for all of it, so one receiver taking its 10 s timeout held every
 * other endpoint's next deliveries for as long. Now `run()` claims work only
 * for endpoints with nothing in flight here, starts each endpoint's requests
 * and goes on claiming for the others. An endpoint's next batch is claimed
 * only once its previous one is answered, as the pass did before, so each
 * endpoint keeps the order it had (within a batch, requests run at once).
 * Bounded: `perEndpoint` requests per endpoint, `batch` in all.
 */
export class WebhookDeliverer {
  private readonly retry: RetryPolicy;
  private readonly clock: () => number;
  private readonly attemptOpts: AttemptOptions;
  private stopped = false;
  private wake?: () => void;
  /** A poke (or a lane finishing) while no pause was running: the next pause is skipped. */
  private woken = false;
  /** Endpoints with requests in flight from this deliverer. */
  private readonly busy = new Set<string>();
  private inFlight = 0;
  private readonly lanes = new Set<Promise<void>>();

  constructor(
    private readonly d: Dialect,
    private readonly opts: DelivererOptions = {},
  ) {
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.clock = opts.clock ?? Date.now;
    this.attemptOpts = { retry: this.retry, clock: this.clock, timeoutMs: opts.timeoutMs, random: opts.random, log: opts.log };
  }

  private get batch(): number {
    return this.opts.batch ?? 50;
  }

  /**
   * Claims due deliveries of enabled endpoints that have nothing in flight
   * here: up to `perEndpoint` each (oldest due first, then event order), up
   * to the free part of the batch in all, oldest due first across endpoints.
   */
  private async claim(): Promise<Row[]> {
    const free = this.batch - this.inFlight;
    if (free <= 0) return [];
    const now = this.clock();
    const lease = now + (this.opts.leaseMs ?? 60_000);
    const per = Math.min(this.opts.perEndpoint ?? 10, free);
    await dropExpiredSecrets(this.d, now);
    const due = await this.d.read(async (c) => {
      const endpoints = (await c.query('SELECT id FROM billing_webhook_endpoints WHERE enabled = 1 ORDER BY id')).map((r) => String(r.id)).filter((id) => !this.busy.has(id));
      const rows: Row[] = [];
      for (let i = 0; i < endpoints.length; i += ENDPOINTS_PER_STATEMENT) {
        const ids = endpoints.slice(i, i + ENDPOINTS_PER_STATEMENT);
        // One indexed read per endpoint (deliveries (endpoint_id, status, next_attempt_at)): a backlog of one
        // endpoint is never scanned to find another's due deliveries.
        const one = `SELECT * FROM (SELECT d.event_id, d.endpoint_id, d.attempts, d.next_attempt_at, e.seq, e.payload, p.url, p.secret, p.old_secrets
             FROM billing_webhook_deliveries d
             JOIN billing_webhook_events e ON e.id = d.event_id
             JOIN billing_webhook_endpoints p ON p.id = d.endpoint_id
            WHERE d.endpoint_id = ? AND d.status = 'pending' AND d.next_attempt_at <= ? AND p.enabled = 1
            ORDER BY d.next_attempt_at, e.seq LIMIT ?) AS due`;
        rows.push(...(await c.query(ids.map(() => one).join(' UNION ALL '), ids.flatMap((id) => [id, now, per]))));
      }
      return rows;
    });
    due.sort((a, b) => Number(a.next_attempt_at) - Number(b.next_attempt_at) || Number(a.seq) - Number(b.seq));
    const claimed: Row[] = [];
    for (const r of due.slice(0, free)) {
      const n = await this.d.writeTransaction((c) =>
        c.run("UPDATE billing_webhook_deliveries SET next_attempt_at = ? WHERE event_id = ? AND endpoint_id = ? AND status = 'pending' AND next_attempt_at = ?", [
          lease, r.event_id as string, r.endpoint_id as string, Number(r.next_attempt_at),
        ]),
      );
      if (n === 1) claimed.push(r);
    }
    return claimed;
  }

  /** Starts one lane per endpoint among `claimed`; each lane's requests run at once, and the lane ends when all are recorded. */
  private startLanes(claimed: readonly Row[], onError: (e: unknown) => void): Array<Promise<Outcome[]>> {
    const byEndpoint = new Map<string, Row[]>();
    for (const r of claimed) {
      const id = String(r.endpoint_id);
      const rows = byEndpoint.get(id);
      if (rows) rows.push(r);
      else byEndpoint.set(id, [r]);
    }
    return [...byEndpoint].map(([endpointId, rows]) => {
      this.busy.add(endpointId);
      this.inFlight += rows.length;
      // Settled, not Promise.all: a lane whose one attempt failed to record its outcome (the database went away)
      // still waits for its other requests, so the endpoint never has two batches in flight.
      const settled = Promise.allSettled(rows.map((r) => attempt(this.d, r, this.attemptOpts)));
      const lane: Promise<void> = settled
        .then((all) => {
          for (const s of all) if (s.status === 'rejected') onError(s.reason);
        })
        .finally(() => {
          this.busy.delete(endpointId);
          this.inFlight -= rows.length;
          this.lanes.delete(lane);
          // The endpoint may have more due: the loop claims for it now rather than after its pause.
          this.poke();
        });
      this.lanes.add(lane);
      return settled.then((all) => all.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : [])));
    });
  }

  /** One pass: claims what is due (every endpoint its share), sends it, and returns once every outcome is recorded. */
  async deliverDue(): Promise<PassResult> {
    let failure: unknown = null;
    const lanes = this.startLanes(await this.claim(), (e) => (failure ??= e));
    const results = (await Promise.all(lanes)).flat();
    // A database failure recording an outcome fails the pass, as before (the claim's lease then resends it).
    if (failure) throw failure;
    return {
      attempted: results.length,
      delivered: results.filter((s) => s === 'delivered').length,
      failed: results.filter((s) => s === 'failed').length,
      retrying: results.filter((s) => s === 'retrying').length,
    };
  }

  /**
   * Delivers until stop(): claims and starts lanes without waiting for them,
   * pausing `intervalMs` when nothing more can be claimed (cut short by
   * poke() or a lane finishing). On stop it waits for the requests in flight
   * to be answered and recorded.
   */
  async run(intervalMs = 1_000): Promise<void> {
    const onError = (e: unknown) => this.opts.log?.('warn', 'webhook delivery pass failed', { error: (e as Error).message });
    while (!this.stopped) {
      try {
        if (this.startLanes(await this.claim(), onError).length > 0) continue;
      } catch (e) {
        onError(e);
      }
      await this.pause(intervalMs);
    }
    await Promise.all([...this.lanes]);
  }

  private async pause(ms: number): Promise<void> {
    if (this.woken || this.stopped) {
      this.woken = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
    this.wake = undefined;
    this.woken = false;
  }

  /** Start the next pass now (e.g. right after an event was written). */
  poke(): void {
    if (this.wake) this.wake();
    else this.woken = true;
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }
}
