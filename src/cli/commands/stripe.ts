import type { Command } from 'commander';
import { z } from 'zod';
import {
  RECONCILE_SETTLE_MS,
  stripeCustomer,
  stripeReconcile,
  stripeRecharge,
  stripeRetryFailed,
  stripeSetup,
  stripeStatus,
  stripeSync,
  webhooksServe,
  type StripeCommonOptions,
} from '../../stripe/cli';
import type { Ledger } from '../../ledger/types';
import { isBillingError } from '../../errors';
import { errorField, lineLog, type Logger } from '../../log';
import { toStripeIntegrationError } from '../../stripe/errors';
import { type CliContext, withLogLevel } from '../context';
import { jsonLine, keyValues } from '../output';
import { customerId, integer, parseInput, text, usdAmount } from '../validate';

interface StripeFlags {
  stripeKey?: string;
  stripeApi?: string;
}

/** The key comes from STRIPE_SECRET_KEY (preferred: a flag shows in process lists) or --stripe-key. */
function stripeOptions(flags: StripeFlags): StripeCommonOptions {
  const f = parseInput(z.object({ stripeKey: text('stripe key', 300).optional(), stripeApi: z.string().url('--stripe-api must be a URL').optional() }), { ...flags });
  return { secretKey: f.stripeKey, apiBase: f.stripeApi };
}

function withStripeFlags(cmd: Command): Command {
  return cmd
    .option('--stripe-key <key>', 'Stripe secret key (default $STRIPE_SECRET_KEY)')
    .option('--stripe-api <url>', 'another Stripe API base, e.g. a local test server (default $STRIPE_API_BASE)');
}

/** Stops a long-running command on Ctrl-C / SIGTERM. */
function untilSignal(): AbortController {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  return ac;
}

/** Runs a Stripe command, turning raw SDK failures into STRIPE_* errors the CLI prints with their code. */
function stripeCall<T>(cli: CliContext, fn: (ledger: Ledger) => Promise<T>): Promise<T> {
  return cli.withLedger(async (ledger) => {
    try {
      return await fn(ledger);
    } catch (e) {
      throw toStripeIntegrationError(e);
    }
  });
}

/** A worker that stops on an error says so in its log too (the CLI then prints the typed error on stderr and exits 1). */
async function watchLogged<T>(log: Logger | undefined, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (e) {
    const err = toStripeIntegrationError(e);
    log?.fatal({ code: isBillingError(err) ? err.code : undefined, error: errorField(err) }, 'stripe sync stopped on an error');
    throw err;
  }
}

export function registerStripe(program: Command, cli: CliContext): void {
  const stripe = program.command('stripe').description('Stripe: meter-event sync, reconciliation, customers and auto-recharge');
  // Progress lines go to stderr under --json so stdout stays one JSON object.
  const progress = (line: string) => (cli.json ? cli.io.err(`${line}\n`) : cli.io.out(`${line}\n`));

  withStripeFlags(stripe.command('setup').description('turn on the meter-event outbox and create the Stripe meter(s)'))
    .option('--event-name <name>', 'meter event name (default flowise_billing_usage)')
    .option('--per-charge-type', 'one meter per ChargeType instead of one for all usage')
    .option('--invoice-items', 'collect closed invoices (base price, overage) as Stripe invoice items instead of from the credits')
    .option('--no-invoice-items', 'collect closed invoices from the credits again (periods already queued for Stripe stay there)')
    .action(async (flags: StripeFlags & { eventName?: string; perChargeType?: boolean; invoiceItems?: boolean }) => {
      const opts = stripeOptions(flags);
      const r = await stripeCall(cli, (ledger) => stripeSetup(ledger, { ...opts, eventName: flags.eventName, perChargeType: flags.perChargeType, invoiceItems: flags.invoiceItems }, progress));
      const items = r.invoiceItems ? `\nClosed invoices are collected ${r.invoiceItems.enabled ? 'as Stripe invoice items' : 'from the credits'}` : '';
      cli.print({ json: r, human: () => `Outbox on; usage is sent as micro-USD to: ${Object.keys(r.meters).join(', ')}${items}` });
    });

  withStripeFlags(stripe.command('customer <customer>').description('create (or --link) the Stripe customer of a ledger customer'))
    .option('--link <stripe customer id>', 'use an existing Stripe customer (cus_…)')
    .option('--email <email>', 'email for a new Stripe customer')
    .action(async (customer: string, flags: StripeFlags & { link?: string; email?: string }) => {
      const input = parseInput(z.object({ customer: customerId, link: z.string().regex(/^cus_[A-Za-z0-9]+$/, '--link must be a Stripe customer id (cus_…)').optional() }), {
        customer,
        link: flags.link,
      });
      const r = await stripeCall(cli, (ledger) => stripeCustomer(ledger, { ...stripeOptions(flags), customerId: input.customer, stripeCustomerId: input.link, email: flags.email }));
      cli.print({ json: r, human: () => keyValues([['customer', r.customerId], ['stripe customer', r.stripeCustomerId]]) });
    });

  withLogLevel(withStripeFlags(stripe.command('sync')), 'with --watch: ').description('deliver pending meter events (--once, the default) or keep delivering (--watch)')
    .option('--once', 'deliver what is pending and exit')
    .option('--watch', 'keep running; Ctrl-C stops')
    .option('--aggregate-seconds <n>', 'one event per customer and meter per window of this many seconds')
    .option('--concurrency <n>', 'customers (customer + meter pairs) sent to in parallel, one request each at a time', '16')
    .option('--rate <n>', 'requests per second at most (Stripe live mode takes 1,000/s; test mode shares 25/s with every other call)', '80')
    .option('--lease-seconds <n>', 'how long rows are reserved for this worker; a killed worker\'s rows come back after it', '30')
    .option('--customer-retry-seconds <n>', 'how long rows of a customer with no Stripe customer (create failed) wait', '60')
    .action(async (flags: StripeFlags & { once?: boolean; watch?: boolean; aggregateSeconds?: string; concurrency: string; rate: string; leaseSeconds: string; customerRetrySeconds: string; logLevel: string }) => {
      const f = parseInput(
        z.object({
          aggregateSeconds: integer('aggregate seconds', 1, 86_400).optional(),
          concurrency: integer('concurrency', 1, 256),
          rate: integer('rate', 1, 10_000),
          leaseSeconds: integer('lease seconds', 1, 3600),
          customerRetrySeconds: integer('customer retry seconds', 0, 86_400),
        }),
        { aggregateSeconds: flags.aggregateSeconds, concurrency: flags.concurrency, rate: flags.rate, leaseSeconds: flags.leaseSeconds, customerRetrySeconds: flags.customerRetrySeconds },
      );
      // --watch is a long-running worker: JSON log lines (pino, as serve). --once prints progress for a person.
      const log = flags.watch ? cli.logger('stripe-sync', flags.logLevel) : undefined;
      const ac = flags.watch ? untilSignal() : undefined;
      log?.info({ concurrency: f.concurrency, ratePerSecond: f.rate, aggregateSeconds: f.aggregateSeconds ?? null, leaseSeconds: f.leaseSeconds }, 'stripe sync watching the meter-event outbox');
      const r = await stripeCall(cli, (ledger) =>
        watchLogged(log, stripeSync(
          ledger,
          {
            ...stripeOptions(flags),
            watch: flags.watch ?? false,
            signal: ac?.signal,
            aggregateWindowSeconds: f.aggregateSeconds,
            concurrency: f.concurrency,
            ratePerSecond: f.rate,
            leaseMs: f.leaseSeconds * 1000,
            customerRetryMs: f.customerRetrySeconds * 1000,
          },
          log ? lineLog(log) : progress,
        )),
      );
      log?.info({ pending: r.pending, delivered: r.delivered, failed: r.failed, deliveredNow: r.deliveredNow }, 'stripe sync stopped');
      // A worker's stdout is its log; the result object only under --json (whose logs went to stderr).
      if (!log || cli.json) cli.print({
        json: { ...r },
        human: () =>
          keyValues([
            ['delivered now', r.deliveredNow],
            ['already in Stripe', r.duplicatesNow],
            ['pending', r.pending],
            ['delivered in all', r.delivered],
            ['failed', r.failed],
            ['breaker', r.breaker],
            ['invoice items', `${r.invoiceItems.pending} pending, ${r.invoiceItems.delivered} delivered, ${r.invoiceItems.failed} failed`],
          ]),
      });
    });

  stripe
    .command('status')
    .description('meter events and invoice items pending, delivered and failed')
    .action(async () => {
      const r = await stripeCall(cli, (ledger) => stripeStatus(ledger));
      cli.print({
        json: { ...r },
        human: () =>
          keyValues([
            ['pending', r.pending],
            ['due now', r.due],
            ['delivered', r.delivered],
            ['failed', r.failed],
            ['oldest pending', r.oldestPendingAt ?? '—'],
            ...r.lastErrors.map((e) => [`error ${e.id}`, `${e.error} (${e.attempts} attempts)`] as const),
            ['invoice items', `${r.invoiceItems.pending} pending, ${r.invoiceItems.delivered} delivered, ${r.invoiceItems.failed} failed`],
            ...r.invoiceItems.lastErrors.map((e) => [`error ${e.id}`, `${e.error} (${e.attempts} attempts)`] as const),
          ]),
      });
    });

  stripe
    .command('retry-failed')
    .description('queue failed meter events and invoice items for delivery again')
    .action(async () => {
      const r = await stripeCall(cli, (ledger) => stripeRetryFailed(ledger));
      cli.print({ json: r, human: () => `Requeued ${r.requeued} event(s) and ${r.invoiceItemsRequeued} invoice item(s)` });
    });

  withStripeFlags(stripe.command('reconcile').description("compare the ledger's usage per customer and meter with Stripe's"))
    .option('--period <period>', 'YYYY-MM, YYYY-MM-DD or start..end (default: this month, UTC)')
    .option('--settle <seconds>', "while differences remain, read Stripe's eventually consistent summaries again for up to this long", String(RECONCILE_SETTLE_MS / 1000))
    .action(async (flags: StripeFlags & { period?: string; settle: string }) => {
      const f = parseInput(z.object({ settle: integer('settle seconds', 0, 3600) }), { settle: flags.settle });
      const r = await stripeCall(cli, (ledger) =>
        stripeReconcile(ledger, { ...stripeOptions(flags), period: flags.period, settleMs: f.settle * 1000 }, cli.json ? () => undefined : progress),
      );
      cli.print({ json: { ...r }, human: () => (r.ok ? 'No differences.' : `${r.differences.length} difference(s)`) });
      cli.verdict(r.ok);
    });

  const recharge = stripe.command('recharge').description('auto-recharge: top up from a saved card when the balance runs low');
  withStripeFlags(recharge.command('set <customer>').description('configure auto-recharge for a customer'))
    .requiredOption('--threshold <usd>', 'recharge when the available balance falls below this')
    .requiredOption('--amount <usd>', 'how much to charge (whole cents)')
    .requiredOption('--payment-method <pm>', "the customer's saved payment method (pm_…)")
    .option('--retry-window-minutes <n>', 'retry a declined recharge only within this window')
    .option('--disable', 'turn auto-recharge off')
    .action(async (customer: string, flags: StripeFlags & { threshold: string; amount: string; paymentMethod: string; retryWindowMinutes?: string; disable?: boolean }) => {
      const input = parseInput(
        z.object({ customer: customerId, threshold: usdAmount('threshold'), amount: usdAmount('amount', { positive: true }), retry: integer('retry window minutes', 1, 10_080).optional() }),
        { customer, threshold: flags.threshold, amount: flags.amount, retry: flags.retryWindowMinutes },
      );
      const r = await stripeCall(cli, (ledger) =>
        stripeRecharge(ledger, {
          ...stripeOptions(flags),
          customerId: input.customer,
          threshold: flags.threshold,
          amount: flags.amount,
          paymentMethod: flags.paymentMethod,
          retryWindowMs: input.retry === undefined ? undefined : input.retry * 60_000,
          disable: flags.disable,
        }),
      );
      cli.print({ json: { ...r, enabled: !flags.disable }, human: () => `Auto-recharge ${flags.disable ? 'disabled' : 'configured'} for ${input.customer}` });
    });
  withStripeFlags(recharge.command('check [customer]').description('recharge now whoever is below their threshold'))
    .action(async (customer: string | undefined, flags: StripeFlags) => {
      const input = parseInput(z.object({ customer: customerId.optional() }), { customer });
      const r = await stripeCall(cli, (ledger) => stripeRecharge(ledger, { ...stripeOptions(flags), customerId: input.customer }));
      cli.print({ json: { outcomes: r }, human: () => jsonLine(r).trimEnd() });
    });

  const webhooks = program.command('webhooks').description('Stripe webhooks');
  withLogLevel(withStripeFlags(webhooks.command('serve'))).description('verify and apply Stripe webhooks (Ctrl-C stops)')
    .option('--port <port>', 'port to listen on', '8787')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--path <path>', 'URL path', '/stripe/webhooks')
    .option('--webhook-secret <secret>', 'signing secret (default $STRIPE_WEBHOOK_SECRET)')
    .option('--max-connections <n>', 'open connections at most', '256')
    .option('--idle-timeout-seconds <n>', 'close a socket idle (or stalled mid-request) this long', '30')
    .action(async (flags: StripeFlags & { port: string; host: string; path: string; webhookSecret?: string; maxConnections: string; idleTimeoutSeconds: string; logLevel: string }) => {
      const f = parseInput(
        z.object({
          port: integer('port', 0, 65_535),
          path: z.string().startsWith('/', '--path must start with "/"'),
          maxConnections: integer('max connections', 1, 100_000),
          idle: integer('idle timeout seconds', 1, 3600),
        }),
        { port: flags.port, path: flags.path, maxConnections: flags.maxConnections, idle: flags.idleTimeoutSeconds },
      );
      const log = cli.logger('stripe-webhooks', flags.logLevel);
      const ac = untilSignal();
      // The quota service with the event hooks: subscription and invoice events change plans like the CLI's own commands.
      await cli.withServices(async ({ ledger, quota }) => {
        const server = await webhooksServe(
          ledger,
          { ...stripeOptions(flags), quota, port: f.port, host: flags.host, path: f.path, webhookSecret: flags.webhookSecret, maxConnections: f.maxConnections, idleTimeoutMs: f.idle * 1000 },
          lineLog(log),
        );
        await new Promise<void>((resolve) => ac.signal.addEventListener('abort', () => resolve(), { once: true }));
        await server.close();
        log.info({ url: server.url }, 'stopped');
        if (cli.json) cli.print({ json: { stopped: true, url: server.url }, human: () => 'stopped' });
      });
    });
}
