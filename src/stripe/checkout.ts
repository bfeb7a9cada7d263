import type Stripe from 'stripe';
import { z } from 'zod';
import { ValidationError } from '../errors';
import type { Ledger } from '../ledger/types';
import { formatUsd, parseUsd } from '../money';
import { customerIdSchema } from '../schemas';
import { stripeCustomerFor } from './customers';
import { toStripeIntegrationError } from './errors';
import { NANOS_PER_CENT } from './recharge';

/**
 * A customer pays on Stripe's hosted page, and the webhook turns the payment
 * into ledger credit. The session carries what `handleWebhook` looks for:
 * `fb_purpose=topup` and `fb_customer_id`, on the session and on its payment
 * intent, so `checkout.session.completed` and `payment_intent.succeeded`
 * credit the same payment once (whichever arrives first; the other replays).
 */

/** Stripe's smallest USD charge. */
export const MIN_CHECKOUT_CENTS = 50;
/** Stripe's largest USD charge through Checkout (99,999,999 cents). */
export const MAX_CHECKOUT_CENTS = 99_999_999;

export interface TopUpCheckoutInput {
  readonly customerId: string;
  /** USD decimal string, whole cents, e.g. "20" or "12.50". */
  readonly usd: string;
  /** Where Stripe sends the payer after paying (https, or http on localhost). */
  readonly successUrl: string;
  readonly cancelUrl?: string;
  /** Product name on the payment page (default "Account credit"). */
  readonly productName?: string;
  /** Makes a retried call return the same session instead of a second one. */
  readonly idempotencyKey?: string;
}

export interface TopUpCheckout {
  readonly sessionId: string;
  /** The hosted payment page to send the customer to. */
  readonly url: string;
  readonly customerId: string;
  readonly stripeCustomerId: string | null;
  readonly amountCents: number;
  readonly usd: string;
  readonly expiresAt: string;
  readonly metadata: Readonly<Record<string, string>>;
}

const url = (field: string) =>
  z
    .string()
    .max(2048)
    .url(`${field} must be a URL`)
    .refine((u) => /^https:\/\//i.test(u) || /^http:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d+)?(\/|$)/i.test(u), `${field} must be https (http only on localhost)`);

const inputSchema = z.object({
  customerId: customerIdSchema,
  usd: z.string().min(1).max(40),
  successUrl: url('successUrl'),
  cancelUrl: url('cancelUrl').optional(),
  productName: z.string().min(1).max(250).optional(),
  idempotencyKey: z.string().min(1).max(255).optional(),
});

/** Creates a Stripe Checkout Session that, once paid, tops up `customerId` by `usd`. The customer must exist in the ledger. */
export async function createTopUpCheckout(ledger: Ledger, stripe: Stripe, input: TopUpCheckoutInput): Promise<TopUpCheckout> {
  const parsed = inputSchema.safeParse(input);
  if (!parsed.success) throw ValidationError.fromZod('checkout', parsed.error);
  const i = parsed.data;
  const nanos = parseUsd(i.usd, { field: 'usd' });
  if (nanos % NANOS_PER_CENT !== 0n) throw new ValidationError(`usd must be whole cents (Stripe charges cents), got ${formatUsd(nanos)}`, { field: 'usd' });
  const cents = nanos / NANOS_PER_CENT;
  if (cents < BigInt(MIN_CHECKOUT_CENTS) || cents > BigInt(MAX_CHECKOUT_CENTS)) {
    throw new ValidationError(`usd must be between $${formatUsd(BigInt(MIN_CHECKOUT_CENTS) * NANOS_PER_CENT)} and $${formatUsd(BigInt(MAX_CHECKOUT_CENTS) * NANOS_PER_CENT)}`, { field: 'usd' });
  }
  await ledger.getCustomer(i.customerId); // CUSTOMER_NOT_FOUND before anything reaches Stripe
  const stripeCustomerId = await stripeCustomerFor(ledger, i.customerId);
  const metadata = { fb_purpose: 'topup', fb_customer_id: i.customerId };
  try {
    const session = await stripe.checkout.sessions.create(
      {
        mode: 'payment',
        success_url: i.successUrl,
        ...(i.cancelUrl ? { cancel_url: i.cancelUrl } : {}),
        ...(stripeCustomerId ? { customer: stripeCustomerId } : {}),
        client_reference_id: i.customerId,
        metadata,
        payment_intent_data: { metadata },
        line_items: [
          {
            quantity: 1,
            price_data: { currency: 'usd', unit_amount: Number(cents), product_data: { name: i.productName ?? 'Account credit' } },
          },
        ],
      },
      i.idempotencyKey ? { idempotencyKey: i.idempotencyKey } : undefined,
    );
    return {
      sessionId: session.id,
      url: session.url ?? '',
      customerId: i.customerId,
      stripeCustomerId,
      amountCents: Number(cents),
      usd: formatUsd(nanos),
      expiresAt: new Date(session.expires_at * 1000).toISOString(),
      metadata,
    };
  } catch (e) {
    throw toStripeIntegrationError(e);
  }
}
