import type Stripe from 'stripe';
import { BillingError } from '../errors';
import type { Row } from '../ledger/dialect';
import type { Ledger } from '../ledger/types';
import { formatUsd, type Nanos } from '../money';
import { stripeCustomerFor } from './customers';
import { StripeIntegrationError } from './errors';
import { factsOf, shouldRetry } from './retry';
import { guarded, rechargeFailedEvent, writeEvents } from '../webhooks/events';

/**
 * Auto-recharge: when a customer's available balance drops below a
 * threshold, charge a fixed amount off-session on their saved card and credit
 * the ledger once.
 *
 * - Never two in flight: a recharge is claimed by setting `in_flight_key` on
 *   the customer's billing_stripe_recharge row inside a write transaction
 *   (row lock on PostgreSQL, the single writer on SQLite), so concurrent
 *   triggers in any number of processes start one PaymentIntent.
 * - The PaymentIntent's idempotency key is `fb-recharge:<customer>:<sequence>:<attempt>`,
 *   stored before the call; a claim that went stale (process died mid-call)
 *   is resumed with the same key, so Stripe replays the first result.
 * - The ledger is credited with topUp key `stripe:pi:<payment intent id>`,
 *   the same key the webhook handler uses, so the synchronous answer and
 *   `payment_intent.succeeded` credit it exactly once between them.
 * - A declined card releases the claim and records the failure; further
 *   attempts (new keys) happen only within `retryWindowMs` of the first
 *   failure and at least `retryIntervalMs` apart. After the window it stays
 *   quiet until the balance recovers (a manual top-up) or `resetRecharge`.
 */
export interface RechargeConfig {
  readonly customerId: string;
  /** Recharge when available balance < threshold (nano-USD). */
  readonly threshold: Nanos;
  /** Amount charged, in cents (Stripe's minor unit for USD). */
  readonly amountCents: number;
  readonly currency?: string;
  /** The saved card (PaymentIntents need it named; Stripe does not fall back to the customer's default). */
  readonly paymentMethod: string;
  /** How long after the first failure further attempts are made (default 24 h). */
  readonly retryWindowMs?: number;
  /** Least time between attempts (default 1 h). */
  readonly retryIntervalMs?: number;
  readonly enabled?: boolean;
}

export type RechargeOutcome =
  | { status: 'not_needed'; available: string }
  | { status: 'disabled' }
  | { status: 'in_flight'; key: string }
  | { status: 'waiting_retry'; nextAttemptAt: string }
  | { status: 'gave_up'; failingSince: string; lastError: string | null }
  | { status: 'succeeded'; paymentIntent: string; creditedUsd: string; key: string }
  | { status: 'failed'; key: string; paymentIntent: string | null; error: string }
  | { status: 'unknown'; key: string; error: string };

export const NANOS_PER_CENT = 10_000_000n;

interface RechargeRow {
  customerId: string;
  enabled: boolean;
  threshold: bigint;
  amountCents: number;
  currency: string;
  paymentMethod: string | null;
  retryWindowMs: number;
  retryIntervalMs: number;
  sequence: number;
  attempt: number;
  inFlightKey: string | null;
  inFlightSince: number | null;
  failingSince: number | null;
  lastAttemptAt: number | null;
  lastError: string | null;
  lastPaymentIntent: string | null;
}

const n = (v: unknown) => (v === null || v === undefined ? null : Number(v));
function rowFrom(r: Row): RechargeRow {
  return {
    customerId: String(r.customer_id),
    enabled: Number(r.enabled) === 1,
    threshold: BigInt(String(r.threshold)),
    amountCents: Number(r.amount_cents),
    currency: String(r.currency),
    paymentMethod: r.payment_method === null ? null : String(r.payment_method),
    retryWindowMs: Number(r.retry_window_ms),
    retryIntervalMs: Number(r.retry_interval_ms),
    sequence: Number(r.sequence),
    attempt: Number(r.attempt),
    inFlightKey: r.in_flight_key === null ? null : String(r.in_flight_key),
    inFlightSince: n(r.in_flight_since),
    failingSince: n(r.failing_since),
    lastAttemptAt: n(r.last_attempt_at),
    lastError: r.last_error === null ? null : String(r.last_error),
    lastPaymentIntent: r.last_payment_intent === null ? null : String(r.last_payment_intent),
  };
}

export function rechargeKey(customerId: string, sequence: number, attempt: number): string {
  return `fb-recharge:${customerId}:${sequence}:${attempt}`;
}

export class AutoRecharge {
  private readonly clock: () => number;
  /** A claim older than this is presumed orphaned (its process died) and is resumed with the same key. */
  private readonly staleMs: number;

  constructor(
    private readonly ledger: Ledger,
    private readonly stripe: Stripe,
    opts: { clock?: () => number; staleMs?: number } = {},
  ) {
    this.clock = opts.clock ?? (() => ledger.now());
    this.staleMs = opts.staleMs ?? 10 * 60_000;
  }

  private get d() {
    return this.ledger.dialect;
  }

  async configure(cfg: RechargeConfig): Promise<RechargeConfig> {
    if (!Number.isSafeInteger(cfg.amountCents) || cfg.amountCents < 50) {
      throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', 'recharge amount must be a whole number of cents, at least 50 (Stripe minimum)', { amountCents: cfg.amountCents });
    }
    await this.ledger.getCustomer(cfg.customerId);
    const now = this.clock();
    await this.d.writeTransaction((c) =>
      c.run(
        `INSERT INTO billing_stripe_recharge (customer_id, enabled, threshold, amount_cents, currency, payment_method, retry_window_ms, retry_interval_ms,
            sequence, attempt, in_flight_key, in_flight_since, failing_since, last_attempt_at, last_error, last_payment_intent, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, ?)
         ON CONFLICT (customer_id) DO UPDATE SET enabled = excluded.enabled, threshold = excluded.threshold, amount_cents = excluded.amount_cents,
            currency = excluded.currency, payment_method = excluded.payment_method, retry_window_ms = excluded.retry_window_ms,
            retry_interval_ms = excluded.retry_interval_ms, updated_at = excluded.updated_at`,
        [
          cfg.customerId, cfg.enabled === false ? 0 : 1, cfg.threshold, cfg.amountCents, (cfg.currency ?? 'usd').toLowerCase(), cfg.paymentMethod,
          cfg.retryWindowMs ?? 24 * 3600_000, cfg.retryIntervalMs ?? 3600_000, now,
        ],
      ),
    );
    return cfg;
  }

  async state(customerId: string): Promise<RechargeRow | null> {
    const rows = await this.d.read((c) => c.query('SELECT * FROM billing_stripe_recharge WHERE customer_id = ?', [customerId]));
    return rows[0] ? rowFrom(rows[0]) : null;
  }

  /** Clears a failure streak so attempts may start again (with a fresh key: the attempt counter keeps counting). */
  async reset(customerId: string): Promise<void> {
    await this.d.writeTransaction((c) =>
      c.run('UPDATE billing_stripe_recharge SET failing_since = NULL, last_error = NULL, updated_at = ? WHERE customer_id = ?', [this.clock(), customerId]),
    );
  }

  /** Checks every customer with auto-recharge enabled. */
  async checkAll(): Promise<RechargeOutcome[]> {
    const rows = await this.d.read((c) => c.query('SELECT customer_id FROM billing_stripe_recharge WHERE enabled = 1 ORDER BY customer_id'));
    const out: RechargeOutcome[] = [];
    for (const r of rows) out.push(await this.check(String(r.customer_id)));
    return out;
  }

  /** The ledger's own available balance (balance − open holds); 0 for a customer the ledger does not know. */
  private async available(customerId: string): Promise<bigint> {
    try {
      return (await this.ledger.balance(customerId)).available;
    } catch (e) {
      if (e instanceof BillingError && e.code === 'CUSTOMER_NOT_FOUND') return 0n;
      throw e;
    }
  }

  /**
   * Recharges the customer if its available balance is below the threshold and nothing is in flight.
   * The balance is read before the claim (most checks stop there) and again after a new claim: a
   * recharge that completed a moment ago committed its top-up before releasing its claim, so the
   * second read sees it and the new claim is let go instead of charging the card twice.
   */
  async check(customerId: string): Promise<RechargeOutcome> {
    const now = this.clock();
    const before = await this.available(customerId);
    type Claim = { outcome: RechargeOutcome } | { key: string; cfg: RechargeRow; resumed: boolean };
    const claim = await this.d.writeTransaction<Claim>(async (c) => {
      const [r] = await c.query(`SELECT * FROM billing_stripe_recharge WHERE customer_id = ? ${this.d.forUpdate}`, [customerId]);
      if (!r) return { outcome: { status: 'disabled' } };
      const row = rowFrom(r);
      if (!row.enabled || !row.paymentMethod) return { outcome: { status: 'disabled' } };
      if (row.inFlightKey !== null) {
        if (row.inFlightSince !== null && now - row.inFlightSince < this.staleMs) return { outcome: { status: 'in_flight', key: row.inFlightKey } };
        // Orphaned claim: resume it with the same key (Stripe replays the original answer).
        await c.run('UPDATE billing_stripe_recharge SET in_flight_since = ?, updated_at = ? WHERE customer_id = ?', [now, now, customerId]);
        return { key: row.inFlightKey, cfg: row, resumed: true };
      }
      const available = before;
      if (available >= row.threshold) {
        if (row.failingSince !== null) {
          // The attempt counter is not reset: every attempt of a sequence needs a key of its own, or Stripe would replay an old decline.
          await c.run('UPDATE billing_stripe_recharge SET failing_since = NULL, updated_at = ? WHERE customer_id = ?', [now, customerId]);
        }
        return { outcome: { status: 'not_needed', available: formatUsd(available) } };
      }
      if (row.failingSince !== null) {
        if (now - row.failingSince > row.retryWindowMs) {
          return { outcome: { status: 'gave_up', failingSince: new Date(row.failingSince).toISOString(), lastError: row.lastError } };
        }
        if (row.lastAttemptAt !== null && now - row.lastAttemptAt < row.retryIntervalMs) {
          return { outcome: { status: 'waiting_retry', nextAttemptAt: new Date(row.lastAttemptAt + row.retryIntervalMs).toISOString() } };
        }
      }
      const key = rechargeKey(customerId, row.sequence, row.attempt);
      await c.run('UPDATE billing_stripe_recharge SET in_flight_key = ?, in_flight_since = ?, last_attempt_at = ?, updated_at = ? WHERE customer_id = ?', [
        key, now, now, now, customerId,
      ]);
      return { key, cfg: row, resumed: false };
    });
    if ('outcome' in claim) return claim.outcome;
    if (!claim.resumed) {
      const after = await this.available(customerId);
      if (after >= claim.cfg.threshold) {
        // Never sent: the key is free for the next real attempt.
        await this.d.writeTransaction((c) =>
          c.run('UPDATE billing_stripe_recharge SET in_flight_key = NULL, in_flight_since = NULL, updated_at = ? WHERE customer_id = ? AND in_flight_key = ?', [
            this.clock(), customerId, claim.key,
          ]),
        );
        return { status: 'not_needed', available: formatUsd(after) };
      }
    }
    return this.attempt(customerId, claim.key, claim.cfg);
  }

  private async attempt(customerId: string, key: string, cfg: RechargeRow): Promise<RechargeOutcome> {
    const stripeCustomer = await stripeCustomerFor(this.ledger, customerId);
    if (!stripeCustomer) {
      await this.fail(customerId, key, null, 'no Stripe customer linked');
      return { status: 'failed', key, paymentIntent: null, error: 'no Stripe customer linked' };
    }
    let pi: Stripe.PaymentIntent;
    try {
      pi = await this.stripe.paymentIntents.create(
        {
          amount: cfg.amountCents,
          currency: cfg.currency,
          customer: stripeCustomer,
          payment_method: cfg.paymentMethod!,
          off_session: true,
          confirm: true,
          description: `Auto-recharge of ${customerId}`,
          metadata: { fb_purpose: 'auto_recharge', fb_customer_id: customerId, fb_recharge_key: key },
        },
        { idempotencyKey: key },
      );
    } catch (e) {
      const f = factsOf(e);
      const raw = (e as { raw?: { payment_intent?: { id?: string } } }).raw;
      if (f.type === 'StripeCardError' || f.statusCode === 402) {
        const error = `${f.code ?? 'card_error'}: ${f.message ?? ''}`;
        await this.fail(customerId, key, raw?.payment_intent?.id ?? null, error);
        return { status: 'failed', key, paymentIntent: raw?.payment_intent?.id ?? null, error };
      }
      if (shouldRetry(f)) {
        // Outcome unknown: keep the claim. The webhook settles it, or a later check resumes it with the same key.
        return { status: 'unknown', key, error: f.message ?? String(e) };
      }
      await this.fail(customerId, key, null, `${f.statusCode ?? ''} ${f.message ?? String(e)}`.trim());
      return { status: 'failed', key, paymentIntent: null, error: f.message ?? String(e) };
    }
    if (pi.status !== 'succeeded') {
      // requires_action etc.: an off-session charge that needs the customer cannot complete here.
      await this.fail(customerId, key, pi.id, `payment intent ${pi.status}`);
      return { status: 'failed', key, paymentIntent: pi.id, error: `payment intent ${pi.status}` };
    }
    const credited = await completeRecharge(this.ledger, { customerId, key, paymentIntentId: pi.id, amountCents: pi.amount_received || pi.amount, now: this.clock() });
    return { status: 'succeeded', paymentIntent: pi.id, creditedUsd: formatUsd(credited), key };
  }

  private async fail(customerId: string, key: string, paymentIntent: string | null, error: string): Promise<void> {
    await failRecharge(this.ledger, { customerId, key, paymentIntentId: paymentIntent, error, now: this.clock() });
  }
}

/** Credits a successful recharge once (by payment intent) and releases the claim if it still holds `key`. Shared with the webhook handler. */
export async function completeRecharge(
  ledger: Ledger,
  p: { customerId: string; key: string | null; paymentIntentId: string; amountCents: number; now: number },
): Promise<Nanos> {
  const amount = BigInt(p.amountCents) * NANOS_PER_CENT;
  await ledger.topUp({ customerId: p.customerId, amount, idempotencyKey: `stripe:pi:${p.paymentIntentId}`, actor: 'stripe', memo: `Stripe payment ${p.paymentIntentId}` });
  if (p.key !== null) {
    await ledger.dialect.writeTransaction((c) =>
      c.run(
        `UPDATE billing_stripe_recharge SET in_flight_key = NULL, in_flight_since = NULL, sequence = sequence + 1, attempt = 0,
            failing_since = NULL, last_error = NULL, last_payment_intent = ?, updated_at = ?
          WHERE customer_id = ? AND in_flight_key = ?`,
        [p.paymentIntentId, p.now, p.customerId, p.key],
      ),
    );
  }
  return amount;
}

export async function failRecharge(
  ledger: Ledger,
  p: { customerId: string; key: string; paymentIntentId: string | null; error: string; now: number },
): Promise<void> {
  await ledger.dialect.writeTransaction(async (c) => {
    const n = await c.run(
      `UPDATE billing_stripe_recharge SET in_flight_key = NULL, in_flight_since = NULL, attempt = attempt + 1,
          failing_since = COALESCE(failing_since, ?), last_error = ?, last_payment_intent = COALESCE(?, last_payment_intent), updated_at = ?
        WHERE customer_id = ? AND in_flight_key = ?`,
      [p.now, p.error.slice(0, 500), p.paymentIntentId, p.now, p.customerId, p.key],
    );
    // The outbound recharge.failed webhook commits with the failure (a no-op if the webhook tables were never migrated).
    if (n > 0) await guarded(c, () => writeEvents(c, [rechargeFailedEvent(p)], p.now).then(() => undefined), () => undefined);
  });
}
