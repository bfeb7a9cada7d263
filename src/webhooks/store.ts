import { createHash, randomUUID } from 'node:crypto';
import { z } from 'zod';
import { BillingError, IdempotencyConflictError, ValidationError } from '../errors';
import type { Dialect, Row } from '../ledger/dialect';
import { formatUsd, type Nanos } from '../money';
import { NO_CONTROL_CHARACTERS } from '../schemas';
import { EVENT_TYPES } from './events';
import { oldSecretExpiries, rotate, rotationInput } from './secrets';
import { newEndpointSecret } from './sign';

export interface Endpoint {
  readonly id: string;
  readonly url: string;
  readonly events: readonly string[];
  readonly description: string | null;
  readonly enabled: boolean;
  /** When each secret replaced by a rotation stops signing deliveries, soonest first; empty outside an overlap. */
  readonly oldSecretsExpireAt: readonly string[];
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface StoredEvent {
  readonly seq: number;
  readonly id: string;
  readonly type: string;
  readonly customerId: string | null;
  readonly payload: Record<string, unknown>;
  readonly createdAt: string;
}

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface DeliveryCounts {
  /** Deliveries waiting for an enabled endpoint: the ones that will be sent. */
  readonly pending: number;
  readonly delivered: number;
  readonly failed: number;
  /** Age of the oldest of `pending`, ms (0 when none): the outbox lag. */
  readonly oldestPendingMs: number;
  /**
   * Deliveries held by disabled endpoints (a 410 Gone, or `--disable`): sent only once the endpoint is enabled
   * again, so they are neither in `pending` nor in the lag; `pausedByEndpoint` says whose.
   */
  readonly paused: number;
  readonly pausedByEndpoint: Array<{ endpointId: string; pending: number }>;
  /** Up to 5 undelivered deliveries that failed an attempt, latest first: which, and why (as the Stripe outbox's status). */
  readonly lastErrors: Array<{ eventId: string; endpointId: string; status: 'pending' | 'failed'; attempts: number; error: string }>;
}

/** An absolute http(s) URL without credentials in it, stored exactly as it is sent. */
const parsedUrl = (u: string): URL | null => {
  try {
    return new URL(u);
  } catch {
    return null;
  }
};
export const endpointUrl = z
  .string()
  .max(2000)
  // The URL parser silently drops tabs, newlines and surrounding spaces (and PostgreSQL refuses a NUL with an untyped
  // error), so such a url would be listed as one thing and called as another: refuse it instead.
  .regex(NO_CONTROL_CHARACTERS, 'url must not contain control characters (newlines, tabs, escapes)')
  .url('url must be an absolute URL')
  .refine((u) => u === u.trim(), 'url must not start or end with spaces')
  // zod runs refinements even after .url() failed, so each one parses defensively.
  .refine((u) => { const p = parsedUrl(u); return !p || /^https?:$/.test(p.protocol); }, 'url must be http or https')
  .refine((u) => { const p = parsedUrl(u); return !p || (!p.username && !p.password); }, 'url must not carry credentials')
  .refine((u) => { const p = parsedUrl(u); return !p || !FETCH_BLOCKED_PORTS.has(p.port); }, 'url port is one fetch never connects to (Fetch standard, port blocking): every delivery would fail');

/**
 * The Fetch standard's bad ports (https://fetch.spec.whatwg.org/#port-blocking): Node's fetch refuses them
 * before connecting ("bad port"), so an endpoint on one could never be delivered to.
 */
export const FETCH_BLOCKED_PORTS: ReadonlySet<string> = new Set(
  [
    1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123,
    135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995,
    1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
  ].map(String),
);

/** Shown in listings and the dashboard: one line, no escapes (empty is allowed). */
const description = z
  .string()
  .max(500)
  .refine((d) => d === '' || NO_CONTROL_CHARACTERS.test(d), 'description must not contain control characters (newlines, tabs, escapes)');

export const eventFilter = z.array(z.enum(['*', ...EVENT_TYPES])).min(1, 'subscribe to at least one event type (or "*")').max(EVENT_TYPES.length + 1);

export const endpointInput = z.object({
  url: endpointUrl,
  events: eventFilter.default(['*']),
  description: description.optional(),
});
export const endpointUpdate = z.object({
  url: endpointUrl.optional(),
  events: eventFilter.optional(),
  description: description.nullable().optional(),
  enabled: z.boolean().optional(),
});

function endpointFromRow(r: Row, now: number): Endpoint {
  return {
    id: String(r.id),
    url: String(r.url),
    events: JSON.parse(String(r.events)) as string[],
    description: r.description === null ? null : String(r.description),
    enabled: Number(r.enabled) === 1,
    oldSecretsExpireAt: oldSecretExpiries(r, now),
    createdAt: new Date(Number(r.created_at)).toISOString(),
    updatedAt: new Date(Number(r.updated_at)).toISOString(),
  };
}

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, what: string, input: unknown): T {
  const r = schema.safeParse(input);
  if (!r.success) throw ValidationError.fromZod(what, r.error);
  return r.data;
}

/** Endpoints, events and delivery state: the webhook tables, and nothing else. */
export class WebhookStore {
  constructor(
    private readonly d: Dialect,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * Adds an endpoint. With `key` (from the API's Idempotency-Key) its id is
   * derived from the key, so an attempt that runs again under that key gets
   * the one endpoint and its secret instead of a second endpoint (every event
   * would go out once per copy). serve's key claim (server/idempotency.ts)
   * already keeps concurrent attempts apart; this covers one that takes over
   * a stale claim, or whose stored answer was lost. The key with other
   * fields is IDEMPOTENCY_CONFLICT.
   */
  async createEndpoint(input: unknown, opts: { key?: string } = {}): Promise<Endpoint & { secret: string }> {
    const i = parse(endpointInput, 'webhook endpoint', input);
    const id = `we_${opts.key === undefined ? randomUUID().replace(/-/g, '') : createHash('sha256').update(opts.key).digest('hex').slice(0, 32)}`;
    const now = this.clock();
    const row = await this.d.writeTransaction(async (c) => {
      await c.run(
        'INSERT INTO billing_webhook_endpoints (id, url, secret, events, description, enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, ?, ?) ON CONFLICT (id) DO NOTHING',
        [id, i.url, newEndpointSecret(), JSON.stringify(i.events), i.description ?? null, now, now],
      );
      const [r] = await c.query('SELECT * FROM billing_webhook_endpoints WHERE id = ?', [id]);
      return r;
    });
    if (!row) throw notFound(id);
    const e = endpointFromRow(row, now);
    if (opts.key !== undefined && (e.url !== i.url || JSON.stringify(e.events) !== JSON.stringify(i.events) || e.description !== (i.description ?? null))) {
      throw new IdempotencyConflictError(opts.key, 'webhook endpoint');
    }
    return { ...e, secret: String(row.secret) };
  }

  async updateEndpoint(id: string, input: unknown): Promise<Endpoint> {
    const i = parse(endpointUpdate, 'webhook endpoint', input);
    await this.d.writeTransaction(async (c) => {
      const [r] = await c.query(`SELECT * FROM billing_webhook_endpoints WHERE id = ? ${this.d.forUpdate}`, [id]);
      if (!r) throw notFound(id);
      const now = this.clock();
      const cur = endpointFromRow(r, now);
      await c.run('UPDATE billing_webhook_endpoints SET url = ?, events = ?, description = ?, enabled = ?, updated_at = ? WHERE id = ?', [
        i.url ?? cur.url,
        JSON.stringify(i.events ?? cur.events),
        i.description === undefined ? cur.description : i.description,
        (i.enabled ?? cur.enabled) ? 1 : 0,
        now,
        id,
      ]);
      // Enabling is the operator saying the receiver is ready: its held deliveries are due now. They kept the
      // backoff of the outage that got it disabled, so they went out up to an hour later, one by one.
      if (i.enabled === true && !cur.enabled) {
        await c.run("UPDATE billing_webhook_deliveries SET next_attempt_at = ? WHERE endpoint_id = ? AND status = 'pending' AND next_attempt_at > ?", [now, id, now]);
      }
    });
    return this.getEndpoint(id);
  }

  /** Deletes the endpoint and its undelivered deliveries (delivered ones stay as history). */
  async deleteEndpoint(id: string): Promise<void> {
    await this.d.writeTransaction(async (c) => {
      const n = await c.run('DELETE FROM billing_webhook_endpoints WHERE id = ?', [id]);
      if (n === 0) throw notFound(id);
      await c.run("DELETE FROM billing_webhook_deliveries WHERE endpoint_id = ? AND status <> 'delivered'", [id]);
    });
  }

  async getEndpoint(id: string): Promise<Endpoint> {
    const [r] = await this.d.read((c) => c.query('SELECT * FROM billing_webhook_endpoints WHERE id = ?', [id]));
    if (!r) throw notFound(id);
    return endpointFromRow(r, this.clock());
  }

  async listEndpoints(): Promise<Endpoint[]> {
    const rows = await this.d.read((c) => c.query('SELECT * FROM billing_webhook_endpoints ORDER BY created_at, id'));
    const now = this.clock();
    return rows.map((r) => endpointFromRow(r, now));
  }

  /**
   * Gives the endpoint a new signing secret, returned here only. The
   * replaced one keeps signing deliveries next to it for `overlapSeconds`
   * (default 24 h, at most 7 days; 0 drops it, and any replaced before, at
   * once), so the receiver accepts with either while its operator deploys
   * the new one (secrets.ts).
   */
  async rotateSecret(id: string, input: unknown = {}): Promise<Endpoint & { secret: string }> {
    const i = parse(rotationInput, 'secret rotation', input ?? {});
    const secret = newEndpointSecret();
    const now = this.clock();
    const row = await this.d.writeTransaction(async (c) => {
      const [r] = await c.query(`SELECT * FROM billing_webhook_endpoints WHERE id = ? ${this.d.forUpdate}`, [id]);
      if (!r) throw notFound(id);
      await rotate(c, r, secret, i.overlapSeconds, now);
      const [after] = await c.query('SELECT * FROM billing_webhook_endpoints WHERE id = ?', [id]);
      return after!;
    });
    return { ...endpointFromRow(row, now), secret };
  }

  /** Events, newest first, optionally for one customer; `beforeSeq` pages backwards. */
  async listEvents(opts: { customerId?: string; limit?: number; beforeSeq?: number } = {}): Promise<StoredEvent[]> {
    const limit = Math.min(Math.max(opts.limit ?? 50, 1), 500);
    const before = opts.beforeSeq ?? Number.MAX_SAFE_INTEGER;
    const rows = await this.d.read((c) =>
      opts.customerId
        ? c.query('SELECT * FROM billing_webhook_events WHERE customer_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?', [opts.customerId, before, limit])
        : c.query('SELECT * FROM billing_webhook_events WHERE seq < ? ORDER BY seq DESC LIMIT ?', [before, limit]),
    );
    return rows.map((r) => ({
      seq: Number(r.seq),
      id: String(r.id),
      type: String(r.type),
      customerId: r.customer_id === null ? null : String(r.customer_id),
      payload: JSON.parse(String(r.payload)) as Record<string, unknown>,
      createdAt: new Date(Number(r.created_at)).toISOString(),
    }));
  }

  async deliveryCounts(): Promise<DeliveryCounts> {
    const now = this.clock();
    // Undelivered deliveries count only while their endpoint exists: on PostgreSQL an endpoint deleted while a
    // cause's transaction was writing an event for it (its delivery not yet committed, so not deleted with it)
    // leaves a delivery nobody sends, which would read as pending, and as lag, for ever. A disabled endpoint's
    // deliveries are not sent until it is enabled again: counted as pending, they made the lag grow on an outbox
    // that was delivering everything it could, so they are reported apart (paused).
    const live = "(d.status = 'delivered' OR p.id IS NOT NULL)";
    const [rows, paused, errors] = await this.d.read(async (c) => [
      await c.query(
        `SELECT d.status, p.enabled, COUNT(*) AS n, MIN(d.created_at) AS oldest FROM billing_webhook_deliveries d
           LEFT JOIN billing_webhook_endpoints p ON p.id = d.endpoint_id WHERE ${live} GROUP BY d.status, p.enabled`,
      ),
      await c.query(
        `SELECT d.endpoint_id, COUNT(*) AS n FROM billing_webhook_deliveries d JOIN billing_webhook_endpoints p ON p.id = d.endpoint_id
          WHERE d.status = 'pending' AND p.enabled = 0 GROUP BY d.endpoint_id ORDER BY d.endpoint_id`,
      ),
      await c.query(
        `SELECT d.event_id, d.endpoint_id, d.status, d.attempts, d.last_error FROM billing_webhook_deliveries d
           LEFT JOIN billing_webhook_endpoints p ON p.id = d.endpoint_id
          WHERE d.status IN ('pending', 'failed') AND d.last_error IS NOT NULL AND ${live} ORDER BY d.next_attempt_at DESC LIMIT 5`,
      ),
    ]);
    const count = (status: string) => rows.filter((r) => String(r.status) === status).reduce((n, r) => n + Number(r.n), 0);
    const sending = rows.find((r) => String(r.status) === 'pending' && Number(r.enabled) === 1);
    return {
      pending: Number(sending?.n ?? 0),
      delivered: count('delivered'),
      failed: count('failed'),
      oldestPendingMs: sending?.oldest === null || sending?.oldest === undefined ? 0 : Math.max(0, now - Number(sending.oldest)),
      paused: paused.reduce((n, r) => n + Number(r.n), 0),
      pausedByEndpoint: paused.map((r) => ({ endpointId: String(r.endpoint_id), pending: Number(r.n) })),
      lastErrors: errors.map((r) => ({
        eventId: String(r.event_id),
        endpointId: String(r.endpoint_id),
        status: String(r.status) as 'pending' | 'failed',
        attempts: Number(r.attempts),
        error: String(r.last_error),
      })),
    };
  }

  /** Puts failed deliveries back in the queue, due now. */
  async retryFailed(endpointId?: string): Promise<number> {
    const now = this.clock();
    return this.d.writeTransaction((c) =>
      endpointId
        ? c.run("UPDATE billing_webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE status = 'failed' AND endpoint_id = ?", [now, endpointId])
        : c.run("UPDATE billing_webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE status = 'failed'", [now]),
    );
  }

  /** Sets (null clears) the low-balance threshold of a customer, or the default with customerId "*". */
  async setLowBalanceThreshold(customerId: string, threshold: Nanos | null): Promise<void> {
    await this.d.writeTransaction((c) =>
      threshold === null
        ? c.run('DELETE FROM billing_webhook_balance_thresholds WHERE customer_id = ?', [customerId])
        : c.run(
            'INSERT INTO billing_webhook_balance_thresholds (customer_id, threshold, updated_at) VALUES (?, ?, ?) ON CONFLICT (customer_id) DO UPDATE SET threshold = excluded.threshold, updated_at = excluded.updated_at',
            [customerId, threshold, this.clock()],
          ),
    );
  }

  async lowBalanceThresholds(): Promise<Array<{ customerId: string; thresholdUsd: string }>> {
    const rows = await this.d.read((c) => c.query('SELECT customer_id, threshold FROM billing_webhook_balance_thresholds ORDER BY customer_id'));
    return rows.map((r) => ({ customerId: String(r.customer_id), thresholdUsd: formatUsd(BigInt(String(r.threshold))) }));
  }
}

function notFound(id: string): BillingError {
  return new BillingError('NOT_FOUND', `Webhook endpoint ${id} does not exist`, { endpointId: id });
}
