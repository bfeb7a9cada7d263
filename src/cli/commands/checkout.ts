import type { Command } from 'commander';
import { z } from 'zod';
import { createStripeClient } from '../../stripe/client';
import { createTopUpCheckout } from '../../stripe/checkout';
import type { CliContext } from '../context';
import { keyValues } from '../output';
import { customerId, parseInput, text } from '../validate';

/** `stripe checkout`: its own module so the Stripe sync commands stay untouched; it hangs under `stripe`. */
export function registerCheckout(program: Command, cli: CliContext): void {
  const stripe = program.commands.find((c) => c.name() === 'stripe') ?? program.command('stripe');
  stripe
    .command('checkout <customer> <usd>')
    .description('create a Stripe Checkout page where the customer pays <usd>; the webhook credits it to their balance once paid')
    .requiredOption('--success-url <url>', 'where Stripe sends the customer after paying (https)')
    .option('--cancel-url <url>', 'where Stripe sends the customer on "back"')
    .option('--product-name <name>', 'what the payment page calls it (default "Account credit")')
    .option('--key <idempotency-key>', 'repeat the same key to get the same session back instead of a second one')
    .option('--stripe-key <key>', 'Stripe secret key (default $STRIPE_SECRET_KEY)')
    .option('--stripe-api <url>', 'another Stripe API base, e.g. a local test server (default $STRIPE_API_BASE)')
    .action(
      async (
        customer: string,
        usd: string,
        flags: { successUrl: string; cancelUrl?: string; productName?: string; key?: string; stripeKey?: string; stripeApi?: string },
      ) => {
        const f = parseInput(
          z.object({
            customer: customerId,
            usd: text('usd', 40),
            stripeKey: text('stripe key', 300).optional(),
            stripeApi: z.string().url('--stripe-api must be a URL').optional(),
          }),
          { customer, usd, stripeKey: flags.stripeKey, stripeApi: flags.stripeApi },
        );
        const client = createStripeClient({ secretKey: f.stripeKey, apiBase: f.stripeApi }, cli.io.env);
        const c = await cli.readLedger((ledger) =>
          createTopUpCheckout(ledger, client, {
            customerId: f.customer,
            usd: f.usd,
            successUrl: flags.successUrl,
            cancelUrl: flags.cancelUrl,
            productName: flags.productName,
            idempotencyKey: flags.key,
          }),
        );
        cli.print({
          json: { ...c },
          human: () =>
            [
              `Checkout for ${c.customerId}: $${c.usd}. Send the customer to:`,
              c.url,
              '',
              keyValues([
                ['session', c.sessionId],
                ['expires', c.expiresAt],
                ['stripe customer', c.stripeCustomerId ?? '(none linked; Stripe collects an email)'],
              ]),
              'Once paid, `flowise-billing webhooks serve` (or your webhook endpoint) credits the balance.',
            ].join('\n'),
        });
      },
    );
}
