/**
 * Command handlers for `flowise-billing stripe …` and `webhooks serve`. Each
 * takes an open ledger and parsed options and returns a JSON-able result;
 * `print` receives progress lines. Registering them with commander is the
 * CLI's job (src/cli), so this file has no argument parsing.
 */
import type Stripe from 'stripe';
import type { Ledger } from '../ledger/types';
import { errorField, type LineLog } from '../log';
import { meterEventName, type OutboxSettings } from '../ledger/outbox';
import { parseUsd } from '../money';
import { QuotaService } from '../quota/service';
import { createStripeClient, type StripeClientOptions } from './client';
import { configureOutbox, ensureMeter, ensureStripeCustomer, linkStripeCustomer } from './customers';
import { StripeIntegrationError } from './errors';
import { OutboxDelivery, type OutboxDeliveryOptions, type OutboxStatus } from './outbox';
import { AutoRecharge, type RechargeOutcome } from './recharge';
import { parsePeriod, reconcile, type ReconcileReport } from './reconcile';
import { startWebhookServer, type WebhookServer, type WebhookServerOptions } from './webhooks';

/** Progress and event lines: text, plus the same facts as fields for a JSON logger (src/log.ts). */
export type Print = LineLog;

export interface StripeCommonOptions extends StripeClientOptions {
  /** An SDK client to use instead of building one (tests, in-process use). */
  readonly stripe?: Stripe;
}

function client(opts: StripeCommonOptions): Stripe {
  return opts.stripe ?? createStripeClient(opts);
}

/** `stripe setup`: turns the outbox on and creates the meter(s) it will use. */
export async function stripeSetup(
  ledger: Ledger,
  opts: StripeCommonOptions & Partial<Pick<OutboxSettings, 'eventName' | 'perChargeType'>> & { chargeTypes?: string[] } = {},
  print: Print = () => undefined,
): Promise<{ outbox: OutboxSettings; meters: Record<string, string> }> {
  const outbox = await configureOutbox(ledger, { eventName: opts.eventName, perChargeType: opts.perChargeType });
  const stripe = client(opts);
  const names = outbox.perChargeType
    ? [...new Set((opts.chargeTypes ?? Object.keys((await ledger.activeRateCard()).chargeTypes)).map((t) => meterEventName(outbox, t)))]
    : [outbox.eventName];
  const meters: Record<string, string> = {};
  for (const name of names) {
    meters[name] = await ensureMeter(stripe, name);
    print(`meter ${name}: ${meters[name]}`);
  }
  return { outbox, meters };
}

/** `stripe customers link|create`. */
export async function stripeCustomer(
  ledger: Ledger,
  opts: StripeCommonOptions & { customerId: string; stripeCustomerId?: string; email?: string },
): Promise<{ customerId: string; stripeCustomerId: string }> {
  if (opts.stripeCustomerId) return linkStripeCustomer(ledger, opts.customerId, opts.stripeCustomerId);
  return { customerId: opts.customerId, stripeCustomerId: await ensureStripeCustomer(ledger, client(opts), opts.customerId, { email: opts.email }) };
}

export interface StripeSyncOptions extends StripeCommonOptions, Omit<OutboxDeliveryOptions, 'stripe'> {
  /** Keep running, polling for new events; otherwise deliver what is pending and return. */
  readonly watch?: boolean;
  /** For --once: give up waiting for stubborn rows after this long (default 10 minutes). */
  readonly timeoutMs?: number;
  readonly idleMs?: number;
  readonly signal?: AbortSignal;
  /** Also run auto-recharge checks every round (default true in watch mode). */
  readonly recharge?: boolean;
}

/** `stripe sync [--once | --watch]`: delivers the outbox with progress lines; returns the final status. */
export async function stripeSync(ledger: Ledger, opts: StripeSyncOptions = {}, print: Print = () => undefined): Promise<OutboxStatus & { deliveredNow: number; duplicatesNow: number; retriedNow: number; failedNow: number }> {
  const stripe = client(opts);
  const delivery = new OutboxDelivery(ledger, { ...opts, stripe });
  const recharge = (opts.recharge ?? opts.watch) ? new AutoRecharge(ledger, stripe) : null;
  const totals = { deliveredNow: 0, duplicatesNow: 0, retriedNow: 0, failedNow: 0 };
  let rechargeAt = 0;
  const status = await delivery.run({
    watch: opts.watch,
    signal: opts.signal,
    idleMs: opts.idleMs,
    timeoutMs: opts.watch ? undefined : (opts.timeoutMs ?? 10 * 60_000),
    onProgress: (p) => {
      totals.deliveredNow += p.delivered;
      totals.duplicatesNow += p.duplicates;
      totals.retriedNow += p.retried;
      totals.failedNow += p.failed;
      print(
        `sent ${p.requests} request(s): ${p.delivered} delivered, ${p.duplicates} already in Stripe, ${p.retried} to retry, ${p.failed} failed` +
          ` — pending ${p.status.pending}, delivered ${p.status.delivered}, failed ${p.status.failed}, breaker ${p.status.breaker}`,
        {
          level: p.failed > 0 ? 'warn' : 'info',
          requests: p.requests, delivered: p.delivered, duplicates: p.duplicates, retried: p.retried, failed: p.failed,
          outbox: { pending: p.status.pending, delivered: p.status.delivered, failed: p.status.failed }, breaker: p.status.breaker,
        },
      );
      if (recharge && Date.now() - rechargeAt > 10_000) {
        rechargeAt = Date.now();
        void recharge.checkAll().catch((e: unknown) => print(`auto-recharge check failed: ${e instanceof Error ? e.message : String(e)}`, { level: 'warn', error: errorField(e) }));
      }
    },
  });
  return { ...status, ...totals };
}

/** `stripe status`: pending / delivered / failed counts. */
export async function stripeStatus(ledger: Ledger, opts: StripeCommonOptions = {}): Promise<OutboxStatus> {
  // No request is made; the client is only needed by the delivery object.
  const stripe = opts.stripe ?? ({} as Stripe);
  return new OutboxDelivery(ledger, { stripe }).status();
}

/** `stripe retry-failed`: queues failed events again. */
export async function stripeRetryFailed(ledger: Ledger): Promise<{ requeued: number }> {
  return { requeued: await new OutboxDelivery(ledger, { stripe: {} as Stripe }).retryFailed() };
}

/** Default settle window of `stripe reconcile`: how long differences may take to disappear from Stripe's eventually consistent summaries. */
export const RECONCILE_SETTLE_MS = 30_000;

/** `stripe reconcile [--period YYYY-MM | YYYY-MM-DD | start..end] [--settle seconds]`. */
export async function stripeReconcile(
  ledger: Ledger,
  opts: StripeCommonOptions & { period?: string; settleMs?: number } = {},
  print: Print = () => undefined,
): Promise<ReconcileReport> {
  const report = await reconcile(ledger, client(opts), parsePeriod(opts.period, ledger.now()), { settleMs: opts.settleMs ?? 0 });
  for (const l of report.lines) {
    print(`${l.customerId} ${l.eventName}: ledger ${l.ledgerUnits} µ$ ($${l.ledgerUsd}), stripe ${l.stripeUnits ?? 'n/a'}, difference ${l.difference ?? 'n/a'}` +
      (l.pendingEvents ? ` (${l.pendingEvents} pending)` : '') + (l.failedEvents ? ` (${l.failedEvents} failed)` : ''));
  }
  print(report.ok ? 'reconciled: no differences' : `${report.differences.length} difference(s)${report.settledMs ? ` after waiting ${Math.round(report.settledMs / 1000)} s for Stripe's summaries` : ''}`);
  return report;
}

/** `stripe recharge set|check`. */
export async function stripeRecharge(
  ledger: Ledger,
  opts: StripeCommonOptions & { customerId?: string; threshold?: string; amount?: string; paymentMethod?: string; retryWindowMs?: number; retryIntervalMs?: number; disable?: boolean },
): Promise<RechargeOutcome[] | { configured: string }> {
  const r = new AutoRecharge(ledger, client(opts));
  if (opts.threshold !== undefined || opts.amount !== undefined || opts.disable) {
    if (!opts.customerId || !opts.threshold || !opts.amount || !opts.paymentMethod) {
      throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', 'auto-recharge needs --customer, --threshold, --amount and --payment-method');
    }
    const amountNanos = parseUsd(opts.amount, { field: 'amount' });
    if (amountNanos % 10_000_000n !== 0n) throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', 'recharge amount must be whole cents');
    await r.configure({
      customerId: opts.customerId, threshold: parseUsd(opts.threshold, { field: 'threshold' }), amountCents: Number(amountNanos / 10_000_000n),
      paymentMethod: opts.paymentMethod, retryWindowMs: opts.retryWindowMs, retryIntervalMs: opts.retryIntervalMs, enabled: !opts.disable,
    });
    return { configured: opts.customerId };
  }
  return opts.customerId ? [await r.check(opts.customerId)] : r.checkAll();
}

/** `webhooks serve --port <p>`: runs until `signal` aborts (or forever); returns the server so callers can close it. */
export async function webhooksServe(
  ledger: Ledger,
  opts: StripeCommonOptions & WebhookServerOptions & { webhookSecret?: string; quota?: QuotaService },
  print: Print = () => undefined,
): Promise<WebhookServer> {
  const secret = opts.webhookSecret ?? process.env.STRIPE_WEBHOOK_SECRET;
  if (!secret) throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', 'No webhook signing secret: pass --webhook-secret or set STRIPE_WEBHOOK_SECRET');
  const quota = opts.quota ?? new QuotaService(ledger);
  const server = await startWebhookServer(
    { ledger, secret, quota, stripe: opts.stripe ?? (opts.secretKey || process.env.STRIPE_SECRET_KEY ? client(opts) : undefined), log: print },
    { port: opts.port, host: opts.host, path: opts.path, maxConnections: opts.maxConnections, idleTimeoutMs: opts.idleTimeoutMs },
  );
  print(`listening for Stripe webhooks on ${server.url}`, { url: server.url });
  return server;
}
