import type { Dialect, Row } from '../ledger/dialect';
import { DEFAULT_RETRY, delivered, retryAfterMs, retryDelayMs, type RetryPolicy } from './retry';
import { dropExpiredSecrets, signingSecrets } from './secrets';
import { webhookHeaders } from './sign';

export interface DelivererOptions {
  readonly retry?: RetryPolicy;
  readonly clock?: () => number;
  /** Per-request timeout. */
  readonly timeoutMs?: number;
  /** Most deliveries claimed per pass. */
  readonly batch?: number;
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

/** The most of a response body read before hanging up (small answers are read whole, so the connection is kept). */
const MAX_RESPONSE_BYTES = 64 * 1024;

/**
 * Drops a receiver's response body. Only the status counts; reading the body
 * whole would let a receiver that streams without end fill this process's
 * memory and hold the delivery until the timeout.
 */
async function discardBody(res: Response): Promise<void> {
  const reader = res.body?.getReader();
  if (!reader) return;
  try {
    for (let read = 0; read < MAX_RESPONSE_BYTES; ) {
      const { done, value } = await reader.read();
      if (done) return;
      read += value.byteLength;
    }
    await reader.cancel();
  } catch {
    // A body cut short (timeout, reset) changes nothing: the status was the answer.
  }
}

/**
 * Delivers due webhook deliveries, at least once. A delivery is claimed by
 * pushing its next_attempt_at a lease ahead with a compare-and-set, so many
 * deliverers (serve replicas, `endpoints deliver --watch`) can run at once;
 * a deliverer killed mid-request leaves the claim to expire and the delivery
 * is sent again with the same webhook-id.
 */
export class WebhookDeliverer {
  private readonly retry: RetryPolicy;
  private readonly clock: () => number;
  private stopped = false;
  private wake?: () => void;

  constructor(
    private readonly d: Dialect,
    private readonly opts: DelivererOptions = {},
  ) {
    this.retry = opts.retry ?? DEFAULT_RETRY;
    this.clock = opts.clock ?? Date.now;
  }

  async deliverDue(): Promise<PassResult> {
    const now = this.clock();
    const lease = now + (this.opts.leaseMs ?? 60_000);
    await dropExpiredSecrets(this.d, now);
    const due = await this.d.read((c) =>
      c.query(
        `SELECT d.event_id, d.endpoint_id, d.attempts, d.next_attempt_at, e.payload, p.url, p.secret, p.old_secrets
           FROM billing_webhook_deliveries d
           JOIN billing_webhook_events e ON e.id = d.event_id
           JOIN billing_webhook_endpoints p ON p.id = d.endpoint_id
          WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND p.enabled = 1
          ORDER BY d.next_attempt_at, e.seq LIMIT ?`,
        [now, this.opts.batch ?? 50],
      ),
    );
    const claimed: Row[] = [];
    for (const r of due) {
      const n = await this.d.writeTransaction((c) =>
        c.run("UPDATE billing_webhook_deliveries SET next_attempt_at = ? WHERE event_id = ? AND endpoint_id = ? AND status = 'pending' AND next_attempt_at = ?", [
          lease, r.event_id as string, r.endpoint_id as string, Number(r.next_attempt_at),
        ]),
      );
      if (n === 1) claimed.push(r);
    }
    const results = await Promise.all(claimed.map((r) => this.send(r)));
    return {
      attempted: claimed.length,
      delivered: results.filter((s) => s === 'delivered').length,
      failed: results.filter((s) => s === 'failed').length,
      retrying: results.filter((s) => s === 'retrying').length,
    };
  }

  private async send(r: Row): Promise<'delivered' | 'failed' | 'retrying'> {
    const eventId = String(r.event_id);
    const endpointId = String(r.endpoint_id);
    const body = String(r.payload);
    const sentAt = this.clock();
    // Signed with every secret valid now: the current one and, during a rotation's overlap, the replaced ones.
    const headers = webhookHeaders(signingSecrets(r, sentAt), eventId, Math.floor(sentAt / 1000), body);
    let status = 0;
    let error: string | null = null;
    let retryAfter: string | null = null;
    try {
      const res = await fetch(String(r.url), { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000) });
      status = res.status;
      retryAfter = res.headers.get('retry-after');
      await discardBody(res);
      if (!delivered(status)) error = `receiver answered HTTP ${status}`;
    } catch (e) {
      // The cause names the failure without the URL: its code (ECONNREFUSED, ENOTFOUND), else its short message
      // (fetch's "bad port" has no code; "TypeError" alone told the operator nothing).
      const cause = (e as { cause?: { code?: unknown; message?: unknown } }).cause;
      const why = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' && cause.message ? cause.message.slice(0, 200) : (e as Error).name;
      error = `request failed: ${why}`;
    }
    const now = this.clock();
    const attempts = Number(r.attempts) + 1;
    if (error === null) {
      await this.d.writeTransaction((c) =>
        c.run("UPDATE billing_webhook_deliveries SET status = 'delivered', attempts = ?, last_status = ?, last_error = NULL, delivered_at = ? WHERE event_id = ? AND endpoint_id = ?", [
          attempts, status, now, eventId, endpointId,
        ]),
      );
      this.opts.log?.('info', 'webhook delivered', { eventId, endpointId, attempts, status });
      return 'delivered';
    }
    // Standard Webhooks: 410 Gone is the receiver saying it wants no more webhooks from us, so the endpoint is
    // disabled (its other deliveries wait; `endpoints update --enable` and a retry resume them) instead of being
    // called until the attempts run out.
    const gone = status === 410;
    const failed = gone || attempts >= this.retry.maxAttempts;
    // A receiver that said when to come back (Retry-After on a 429 or 503) is not called sooner; the policy's
    // longest pause still caps it, so a receiver cannot park a delivery for days.
    const asked = Math.min(retryAfterMs(retryAfter, now) ?? 0, this.retry.maxMs);
    const next = now + Math.max(retryDelayMs(attempts, this.retry, this.opts.random), asked);
    await this.d.writeTransaction(async (c) => {
      await c.run('UPDATE billing_webhook_deliveries SET status = ?, attempts = ?, last_status = ?, last_error = ?, next_attempt_at = ? WHERE event_id = ? AND endpoint_id = ?', [
        failed ? 'failed' : 'pending', attempts, status || null, error, next, eventId, endpointId,
      ]);
      if (gone) await c.run('UPDATE billing_webhook_endpoints SET enabled = 0, updated_at = ? WHERE id = ?', [now, endpointId]);
    });
    if (gone) {
      this.opts.log?.('warn', 'webhook endpoint answered 410 Gone: delivery failed, endpoint disabled', { eventId, endpointId, attempts, error });
      return 'failed';
    }
    this.opts.log?.('warn', failed ? 'webhook delivery failed for good' : 'webhook delivery failed, will retry', { eventId, endpointId, attempts, error, nextAttemptAt: new Date(next).toISOString() });
    return failed ? 'failed' : 'retrying';
  }

  /** Delivers until stop(): a pass, then a pause of `intervalMs` (cut short by poke()). */
  async run(intervalMs = 1_000): Promise<void> {
    while (!this.stopped) {
      try {
        const r = await this.deliverDue();
        if (r.attempted > 0) continue;
      } catch (e) {
        this.opts.log?.('warn', 'webhook delivery pass failed', { error: (e as Error).message });
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, intervalMs);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
  }

  /** Start the next pass now (e.g. right after an event was written). */
  poke(): void {
    this.wake?.();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }
}
