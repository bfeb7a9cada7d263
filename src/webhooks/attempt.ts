import type { Dialect, Row } from '../ledger/dialect';
import { delivered, retryAfterMs, retryDelayMs, type RetryPolicy } from './retry';
import { signingSecrets } from './secrets';
import { webhookHeaders } from './sign';

export type Outcome = 'delivered' | 'failed' | 'retrying';

export interface AttemptOptions {
  readonly retry: RetryPolicy;
  readonly clock: () => number;
  readonly timeoutMs?: number;
  readonly random?: () => number;
  readonly log?: (level: 'info' | 'warn', msg: string, fields: Record<string, unknown>) => void;
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
 * One attempt at one claimed delivery (a row of the deliverer's claim: the
 * delivery, its event's payload, its endpoint's url and secrets): the signed
 * POST, then its outcome recorded (delivered, retry later, or failed).
 */
export async function attempt(d: Dialect, r: Row, opts: AttemptOptions): Promise<Outcome> {
  const eventId = String(r.event_id);
  const endpointId = String(r.endpoint_id);
  const body = String(r.payload);
  const sentAt = opts.clock();
  // Signed with every secret valid now: the current one and, during a rotation's overlap, the replaced ones.
  const headers = webhookHeaders(signingSecrets(r, sentAt), eventId, Math.floor(sentAt / 1000), body);
  let status = 0;
  let error: string | null = null;
  let retryAfter: string | null = null;
  try {
    const res = await fetch(String(r.url), { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(opts.timeoutMs ?? 10_000) });
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
  const now = opts.clock();
  const attempts = Number(r.attempts) + 1;
  if (error === null) {
    await d.writeTransaction((c) =>
      c.run("UPDATE billing_webhook_deliveries SET status = 'delivered', attempts = ?, last_status = ?, last_error = NULL, delivered_at = ? WHERE event_id = ? AND endpoint_id = ?", [
        attempts, status, now, eventId, endpointId,
      ]),
    );
    opts.log?.('info', 'webhook delivered', { eventId, endpointId, attempts, status });
    return 'delivered';
  }
  // Standard Webhooks: 410 Gone is the receiver saying it wants no more webhooks from us, so the endpoint is
  // disabled (its other deliveries wait; `endpoints update --enable` and a retry resume them) instead of being
  // called until the attempts run out.
  const gone = status === 410;
  const failed = gone || attempts >= opts.retry.maxAttempts;
  // A receiver that said when to come back (Retry-After on a 429 or 503) is not called sooner; the policy's
  // longest pause still caps it, so a receiver cannot park a delivery for days.
  const asked = Math.min(retryAfterMs(retryAfter, now) ?? 0, opts.retry.maxMs);
  const next = now + Math.max(retryDelayMs(attempts, opts.retry, opts.random), asked);
  await d.writeTransaction(async (c) => {
    await c.run('UPDATE billing_webhook_deliveries SET status = ?, attempts = ?, last_status = ?, last_error = ?, next_attempt_at = ? WHERE event_id = ? AND endpoint_id = ?', [
      failed ? 'failed' : 'pending', attempts, status || null, error, next, eventId, endpointId,
    ]);
    if (gone) await c.run('UPDATE billing_webhook_endpoints SET enabled = 0, updated_at = ? WHERE id = ?', [now, endpointId]);
  });
  if (gone) {
    opts.log?.('warn', 'webhook endpoint answered 410 Gone: delivery failed, endpoint disabled', { eventId, endpointId, attempts, error });
    return 'failed';
  }
  opts.log?.('warn', failed ? 'webhook delivery failed for good' : 'webhook delivery failed, will retry', { eventId, endpointId, attempts, error, nextAttemptAt: new Date(next).toISOString() });
  return failed ? 'failed' : 'retrying';
}
