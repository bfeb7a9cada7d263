import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';
import type { LineLog } from '../log';
import { BillingError } from '../errors';
import type { Ledger } from '../ledger/types';
import { formatUsd } from '../money';
import type { QuotaService } from '../quota/service';
import { ledgerCustomerForStripe } from './customers';
import { StripeIntegrationError } from './errors';
import { completeRecharge, failRecharge, NANOS_PER_CENT } from './recharge';
import { parseWebhookEvent, type WebhookEvent } from './webhook-events';

/**
 * Stripe webhooks. `handleWebhook` is the function an operator mounts in their
 * own server (give it the raw body bytes, not parsed JSON); `startWebhookServer`
 * is `flowise-billing webhooks serve`.
 *
 * - The signature is verified on the raw body with the SDK's
 *   `stripe.webhooks.constructEvent` (HMAC-SHA256, constant time) and a
 *   300 s timestamp tolerance. Anything that fails gets 400 and touches nothing.
 * - Idempotent by event id: an event is recorded in billing_stripe_webhook_events
 *   after it was applied; a redelivery of a recorded id is acknowledged and
 *   skipped. Every action is also idempotent on its own (top-ups keyed by the
 *   payment intent, status changes are absolute), so two deliveries racing
 *   before either is recorded still apply once.
 * - The event's shape is then checked (zod, webhook-events.ts): a signed but
 *   malformed event gets 400 VALIDATION_ERROR and touches nothing.
 * - Unknown event types, and events that are not ours (no top-up metadata, an
 *   unlinked customer), are acknowledged (200) so Stripe stops resending them,
 *   and logged with the reason.
 */
export interface WebhookDeps {
  readonly ledger: Ledger;
  /** The endpoint's signing secret (`whsec_…`). */
  readonly secret: string;
  /** Used for constructEvent only; any key works (verification is local). */
  readonly stripe?: Stripe;
  /** For invoice and subscription events; without it those are acknowledged and ignored. */
  readonly quota?: QuotaService;
  readonly toleranceSeconds?: number;
  readonly clock?: () => number;
  /** Maps a Stripe subscription to a plan id; default: metadata.fb_plan_id, else the first item's price lookup_key. */
  readonly planOf?: (sub: Stripe.Subscription) => string | null;
  /** Receives one line per event refused, ignored or applied, with its fields (default: none). */
  readonly log?: LineLog;
}

export interface WebhookResult {
  readonly status: number;
  readonly body: {
    received: boolean;
    eventId?: string;
    type?: string;
    duplicate?: boolean;
    ignored?: boolean;
    /** Why an acknowledged event changed nothing. */
    reason?: string;
    applied?: unknown;
    error?: string;
    /** The typed error's stable code, for refused deliveries. */
    code?: string;
    details?: unknown;
  };
}

export const WEBHOOK_TOLERANCE_SECONDS = 300;

/** An acknowledged event that changed nothing, with the reason (logged, and in the reply). */
interface Ignored {
  readonly ignored: string;
}
const ignore = (reason: string): Ignored => ({ ignored: reason });
const isIgnored = (v: unknown): v is Ignored => typeof v === 'object' && v !== null && 'ignored' in v && typeof (v as Ignored).ignored === 'string';

type Sub = Extract<WebhookEvent, { type: 'customer.subscription.updated' }>['object'];

function defaultPlanOf(sub: Stripe.Subscription): string | null {
  const fromMeta = sub.metadata?.fb_plan_id;
  if (fromMeta) return fromMeta;
  const item = sub.items?.data?.[0];
  return item?.price?.lookup_key ?? null;
}

const idOf = (v: string | { id: string } | null | undefined): string | null => (v === null || v === undefined ? null : typeof v === 'string' ? v : v.id);

/** `event`: the refused event's id and type, when it was read, so an operator can find it in Stripe. */
function refused(deps: WebhookDeps, status: number, err: BillingError, event?: { eventId: string; type: string }): WebhookResult {
  const which = event ? ` (event ${event.eventId}, ${event.type})` : '';
  deps.log?.(`webhook refused (${status} ${err.code})${which}: ${err.message}`, { level: 'warn', outcome: 'refused', status, code: err.code, ...event });
  return { status, body: { received: false, error: err.message, code: err.code, details: err.details } };
}

export async function handleWebhook(deps: WebhookDeps, rawBody: Buffer | string, signature: string | string[] | undefined): Promise<WebhookResult> {
  const stripe = deps.stripe ?? new Stripe('sk_webhook_verification_only');
  const header = Array.isArray(signature) ? signature[0] : signature;
  if (!header) return refused(deps, 400, new StripeIntegrationError('STRIPE_SIGNATURE_INVALID', 'missing Stripe-Signature header'));
  if (typeof rawBody !== 'string' && !Buffer.isBuffer(rawBody)) {
    return refused(deps, 400, new StripeIntegrationError('STRIPE_SIGNATURE_INVALID', 'the webhook body must be the raw request bytes (Buffer or string), not parsed JSON'));
  }
  const receivedAt = deps.clock ? Math.floor(deps.clock() / 1000) : undefined;
  const tolerance = deps.toleranceSeconds ?? WEBHOOK_TOLERANCE_SECONDS;
  let verified: unknown;
  let thin: { id: string; type: string; related?: string } | null = null;
  try {
    verified = stripe.webhooks.constructEvent(rawBody, header, deps.secret, tolerance, undefined, receivedAt);
  } catch (e) {
    const message = (e as Error).message;
    if (!/thin event/.test(message)) return refused(deps, 400, new StripeIntegrationError('STRIPE_SIGNATURE_INVALID', `signature verification failed: ${message}`));
    // A v2 "thin" event notification (an event destination, e.g. v1.billing.meter.error_report_triggered): verified its own way.
    try {
      const n = stripe.parseEventNotification(rawBody, header, deps.secret, tolerance, undefined, receivedAt) as { id: string; type: string; related_object?: { id?: string } | null };
      thin = { id: n.id, type: n.type, related: n.related_object?.id };
    } catch (e2) {
      return refused(deps, 400, new StripeIntegrationError('STRIPE_SIGNATURE_INVALID', `signature verification failed: ${(e2 as Error).message}`));
    }
  }
  let event: WebhookEvent;
  try {
    event = thin ? { id: thin.id, type: thin.type, object: null, unhandled: true } : parseWebhookEvent(verified);
  } catch (e) {
    // Signed but malformed: retrying cannot fix it, and nothing was touched.
    if (e instanceof BillingError) return refused(deps, 400, e);
    throw e;
  }

  const d = deps.ledger.dialect;
  const seen = await d.read((c) => c.query('SELECT result FROM billing_stripe_webhook_events WHERE id = ?', [event.id]));
  if (seen[0]) {
    deps.log?.(`webhook ${event.id} (${event.type}) ignored: already applied`, { outcome: 'duplicate', eventId: event.id, type: event.type });
    return { status: 200, body: { received: true, eventId: event.id, type: event.type, duplicate: true, reason: 'already applied' } };
  }

  let applied: unknown;
  try {
    applied = event.object === null ? ignore(unhandledReason(event.type, thin?.related)) : await apply(deps, event);
  } catch (e) {
    // Signed and well-shaped, but a value the ledger refuses (amount 0, an fb_customer_id that is not a
    // customer id): checked before any write, so nothing changed, and a redelivery cannot fix it. A 500
    // would have Stripe resend it for days.
    if (e instanceof BillingError && e.code === 'VALIDATION_ERROR') return refused(deps, 400, e, { eventId: event.id, type: event.type });
    // Not recorded: Stripe redelivers, and every action is idempotent.
    const msg = e instanceof Error ? e.message : String(e);
    deps.log?.(`webhook ${event.id} (${event.type}) failed, Stripe will redeliver: ${msg}`, { level: 'error', outcome: 'failed', eventId: event.id, type: event.type, ...(e instanceof BillingError ? { code: e.code } : {}) });
    return { status: 500, body: { received: false, eventId: event.id, type: event.type, error: msg, ...(e instanceof BillingError ? { code: e.code } : {}) } };
  }
  const now = deps.clock?.() ?? deps.ledger.now();
  await d.writeTransaction((c) =>
    c.run('INSERT INTO billing_stripe_webhook_events (id, type, result, received_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING', [
      event.id, event.type, JSON.stringify(applied ?? null), now,
    ]),
  );
  if (isIgnored(applied)) {
    deps.log?.(`webhook ${event.id} (${event.type}) ignored: ${applied.ignored}`, { outcome: 'ignored', eventId: event.id, type: event.type, reason: applied.ignored });
    return { status: 200, body: { received: true, eventId: event.id, type: event.type, ignored: true, reason: applied.ignored } };
  }
  deps.log?.(`webhook ${event.id} (${event.type}) applied: ${JSON.stringify(applied)}`, { outcome: 'applied', eventId: event.id, type: event.type, applied });
  return { status: 200, body: { received: true, eventId: event.id, type: event.type, ignored: false, applied } };
}

function unhandledReason(type: string, related: string | undefined): string {
  if (type === 'v1.billing.meter.error_report_triggered') {
    // Stripe validates meter events asynchronously; this says some were dropped. Which rows: reconcile shows the customers.
    return `Stripe reports meter events it rejected for meter ${related ?? '?'}: run \`flowise-billing stripe reconcile\` to find the customers whose usage is missing, and see the meter's errors in the Dashboard`;
  }
  return `event type ${type} is not handled`;
}

async function customerFrom(deps: WebhookDeps, metadataId: string | undefined | null, stripeCustomer: string | null): Promise<string | null> {
  if (metadataId) return metadataId;
  return stripeCustomer ? ledgerCustomerForStripe(deps.ledger, stripeCustomer) : null;
}

const NO_CUSTOMER = 'no fb_customer_id metadata and the Stripe customer is not linked to a ledger customer';

/** Applies one verified, well-shaped event; returns what it did, or why it changed nothing. */
async function apply(deps: WebhookDeps, event: Exclude<WebhookEvent, { object: null }>): Promise<unknown> {
  const now = deps.clock?.() ?? deps.ledger.now();
  switch (event.type) {
    case 'payment_intent.succeeded': {
      const pi = event.object;
      const purpose = pi.metadata?.fb_purpose;
      if (purpose !== 'auto_recharge' && purpose !== 'topup') return ignore(`payment ${pi.id} has fb_purpose ${JSON.stringify(purpose ?? null)}, not topup or auto_recharge`);
      const customerId = await customerFrom(deps, pi.metadata?.fb_customer_id, idOf(pi.customer));
      if (!customerId) return ignore(NO_CUSTOMER);
      const credited = await completeRecharge(deps.ledger, {
        customerId, key: pi.metadata?.fb_recharge_key ?? null, paymentIntentId: pi.id, amountCents: pi.amount_received || pi.amount, now,
      });
      return { toppedUp: customerId, usd: formatUsd(credited), paymentIntent: pi.id };
    }
    case 'payment_intent.payment_failed': {
      const pi = event.object;
      const key = pi.metadata?.fb_recharge_key;
      const customerId = pi.metadata?.fb_customer_id;
      if (pi.metadata?.fb_purpose !== 'auto_recharge' || !key || !customerId) return ignore(`payment ${pi.id} is not an auto-recharge (fb_purpose, fb_recharge_key, fb_customer_id)`);
      const error = pi.last_payment_error ? `${pi.last_payment_error.code ?? 'card_error'}: ${pi.last_payment_error.message ?? ''}` : 'payment failed';
      await failRecharge(deps.ledger, { customerId, key, paymentIntentId: pi.id, error, now });
      return { rechargeFailed: customerId, paymentIntent: pi.id, error };
    }
    case 'checkout.session.completed':
    case 'checkout.session.async_payment_succeeded': {
      const session = event.object;
      if (session.mode !== 'payment' || session.payment_status !== 'paid') return ignore(`session ${session.id} is ${session.mode}/${session.payment_status}, not a paid payment`);
      if (session.metadata?.fb_purpose !== 'topup') return ignore(`session ${session.id} has no fb_purpose=topup metadata`);
      const customerId = await customerFrom(deps, session.metadata?.fb_customer_id ?? session.client_reference_id, idOf(session.customer));
      const pi = idOf(session.payment_intent);
      if (!customerId) return ignore(NO_CUSTOMER);
      if (!pi || session.amount_total === null) return ignore(`session ${session.id} has no payment intent or amount`);
      // Same key as payment_intent.succeeded for the same payment: whichever arrives first credits, the other replays.
      const credited = await completeRecharge(deps.ledger, { customerId, key: null, paymentIntentId: pi, amountCents: session.amount_total, now });
      return { toppedUp: customerId, usd: formatUsd(credited), paymentIntent: pi };
    }
    case 'charge.refunded':
      return refundTopUp(deps, event.object, now);
    case 'invoice.paid':
    case 'invoice.payment_failed': {
      if (!deps.quota) return ignore('no quota service: subscription events are not applied here');
      const invoice = event.object;
      const customerId = await customerFrom(deps, invoice.metadata?.fb_customer_id, idOf(invoice.customer));
      if (!customerId) return ignore(NO_CUSTOMER);
      const status = event.type === 'invoice.paid' ? 'active' : 'suspended';
      try {
        await deps.quota.setStatus(customerId, status);
      } catch (e) {
        if (e instanceof BillingError && e.code === 'SUBSCRIPTION_NOT_FOUND') return { skipped: customerId, reason: 'no subscription' };
        throw e;
      }
      return { customerId, status };
    }
    case 'customer.subscription.updated':
    case 'customer.subscription.created': {
      if (!deps.quota) return ignore('no quota service: subscription events are not applied here');
      const sub: Sub = event.object;
      const customerId = await customerFrom(deps, sub.metadata?.fb_customer_id, idOf(sub.customer));
      if (!customerId) return ignore(NO_CUSTOMER);
      const planId = (deps.planOf ?? defaultPlanOf)(sub as unknown as Stripe.Subscription);
      const out: Record<string, unknown> = { customerId };
      if (planId) out.plan = (await deps.quota.subscribe({ customerId, planId })).change;
      if (sub.status === 'past_due' || sub.status === 'unpaid') {
        await deps.quota.setStatus(customerId, 'suspended');
        out.status = 'suspended';
      } else if (sub.status === 'active' || sub.status === 'trialing') {
        await deps.quota.setStatus(customerId, 'active');
        out.status = 'active';
      }
      return out;
    }
    case 'customer.subscription.deleted': {
      if (!deps.quota) return ignore('no quota service: subscription events are not applied here');
      const sub = event.object;
      const customerId = await customerFrom(deps, sub.metadata?.fb_customer_id, idOf(sub.customer));
      if (!customerId) return ignore(NO_CUSTOMER);
      try {
        return { customerId, canceled: (await deps.quota.cancel(customerId)).periodEnd };
      } catch (e) {
        if (e instanceof BillingError && e.code === 'SUBSCRIPTION_NOT_FOUND') return { skipped: customerId, reason: 'no subscription' };
        throw e;
      }
    }
  }
}

/**
 * A refunded top-up takes the refunded money back out of the ledger balance.
 * `charge.refunded` carries the cumulative `amount_refunded`; the debit is the
 * increase since the last one applied (tracked per Stripe charge), keyed by
 * `stripe:topup-refund:<charge>:<cumulative cents>` so a redelivery changes
 * nothing. If the customer already spent the money, what is available is
 * taken and the remainder reported (the balance never goes negative).
 */
async function refundTopUp(deps: WebhookDeps, charge: Extract<WebhookEvent, { type: 'charge.refunded' }>['object'], now: number): Promise<unknown> {
  const pi = idOf(charge.payment_intent);
  if (!pi) return ignore(`charge ${charge.id} has no payment intent`);
  const d = deps.ledger.dialect;
  // Only payments that credited the ledger (by their top-up key) are ours.
  const customerId = await deps.ledger.toppedUpCustomer(`stripe:pi:${pi}`);
  if (!customerId) return ignore(`payment ${pi} did not top up the ledger`);
  const [prev] = await d.read((c) => c.query('SELECT refunded_cents FROM billing_stripe_topup_refunds WHERE stripe_charge_id = ?', [charge.id]));
  const already = BigInt(String(prev?.refunded_cents ?? 0));
  const total = BigInt(charge.amount_refunded);
  if (total <= already) return { customerId, refundedCents: Number(total), debitedUsd: '0.00', duplicate: true };
  const want = (total - already) * NANOS_PER_CENT;
  const bal = await deps.ledger.balance(customerId);
  const take = want <= bal.available ? want : bal.available > 0n ? bal.available : 0n;
  if (take > 0n) {
    try {
      await deps.ledger.charge({
        customerId, amount: take, idempotencyKey: `stripe:topup-refund:${charge.id}:${total}`, actor: 'stripe',
        chargeType: 'StripeTopUpRefund', metadata: { stripeCharge: charge.id, paymentIntent: pi, refundedCents: Number(total) },
      });
    } catch (e) {
      // A concurrent delivery already applied this step with another available amount: it is done.
      if (!(e instanceof BillingError && e.code === 'IDEMPOTENCY_CONFLICT')) throw e;
    }
  }
  await d.writeTransaction((c) =>
    c.run(
      `INSERT INTO billing_stripe_topup_refunds (stripe_charge_id, customer_id, refunded_cents, debited_nanos, updated_at) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (stripe_charge_id) DO UPDATE SET refunded_cents = excluded.refunded_cents,
         debited_nanos = billing_stripe_topup_refunds.debited_nanos + excluded.debited_nanos, updated_at = excluded.updated_at
       WHERE billing_stripe_topup_refunds.refunded_cents < excluded.refunded_cents`,
      [charge.id, customerId, total, take, now],
    ),
  );
  return { customerId, refundedCents: Number(total), debitedUsd: formatUsd(take), uncollectedUsd: formatUsd(want - take) };
}

export interface WebhookServer {
  readonly port: number;
  readonly url: string;
  close(): Promise<void>;
}

export interface WebhookServerOptions {
  readonly port?: number;
  readonly host?: string;
  readonly path?: string;
  /** Largest body accepted (default 1 MiB; Stripe's events are far smaller). */
  readonly maxBodyBytes?: number;
  /** Open connections at most; more are refused at accept (default 256). */
  readonly maxConnections?: number;
  /** A socket with no traffic for this long is closed, idle keep-alive or a stalled sender (default 30 s). */
  readonly idleTimeoutMs?: number;
  /** Headers must arrive within this (default 10 s), the whole request within idleTimeoutMs. */
  readonly headersTimeoutMs?: number;
}

/** An HTTP server answering POST <path> (default /stripe/webhooks) with handleWebhook. */
export async function startWebhookServer(deps: WebhookDeps, opts: WebhookServerOptions = {}): Promise<WebhookServer> {
  const path = opts.path ?? '/stripe/webhooks';
  const limit = opts.maxBodyBytes ?? 1024 * 1024;
  const idle = opts.idleTimeoutMs ?? 30_000;
  const server = http.createServer({ requestTimeout: idle, headersTimeout: Math.min(idle, opts.headersTimeoutMs ?? 10_000), keepAliveTimeout: Math.min(idle, 5_000) }, (req, res) => {
    const reply = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
      res.end(text);
    };
    // The same body shape, with a stable code, as handleWebhook's refusals.
    if (req.method !== 'POST' || (req.url ?? '').split('?')[0] !== path) return reply(404, { received: false, error: `POST ${path} only`, code: 'NOT_FOUND' });
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        reply(413, { received: false, error: `Request body too large (the limit is ${limit} bytes)`, code: 'VALIDATION_ERROR', details: { limitBytes: limit } });
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (res.writableEnded) return;
      handleWebhook(deps, Buffer.concat(chunks), req.headers['stripe-signature'])
        .then((r) => reply(r.status, r.body))
        .catch((e: unknown) => reply(500, { received: false, error: e instanceof Error ? e.message : String(e), code: e instanceof BillingError ? e.code : 'INTERNAL_ERROR' }));
    });
  });
  // Slow-loris and idle sockets are closed; a flood of connections is capped.
  server.maxConnections = opts.maxConnections ?? 256;
  server.setTimeout(idle, (socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `http://${opts.host ?? '127.0.0.1'}:${port}${path}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
