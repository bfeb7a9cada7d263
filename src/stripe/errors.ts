import { BillingError, ERROR_CODES } from '../errors';

/** The Stripe integration's own failures (ledger business outcomes stay their own BillingErrors). */
export const STRIPE_ERROR_CODES = ERROR_CODES.filter((c): c is StripeErrorCode => c.startsWith('STRIPE_'));
export type StripeErrorCode = Extract<(typeof ERROR_CODES)[number], `STRIPE_${string}`>;

export class StripeIntegrationError extends BillingError {
  readonly type = 'StripeIntegrationError' as const;
  declare readonly code: StripeErrorCode;

  constructor(code: StripeErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(code, message, details);
  }
}

/**
 * A raw Stripe SDK failure as one of our codes (the stripe-node habit: one
 * factory maps raw failures to classes). Anything already ours passes through.
 */
export function toStripeIntegrationError(e: unknown): unknown {
  if (e instanceof BillingError) return e;
  const err = e as { type?: unknown; statusCode?: unknown; message?: unknown; code?: unknown; requestId?: unknown };
  if (typeof err?.type !== 'string' || !err.type.startsWith('Stripe')) return e;
  const details = { stripeType: err.type, statusCode: err.statusCode ?? null, stripeCode: err.code ?? null, requestId: err.requestId ?? null };
  const message = `Stripe: ${String(err.message)}`;
  if (err.type === 'StripeAuthenticationError' || err.type === 'StripePermissionError' || err.statusCode === 401 || err.statusCode === 403) {
    return new StripeIntegrationError('STRIPE_AUTH_FAILED', message, details);
  }
  if (err.type === 'StripeConnectionError' || err.type === 'StripeAPIError' || err.type === 'StripeRateLimitError' || (typeof err.statusCode === 'number' && err.statusCode >= 500)) {
    return new StripeIntegrationError('STRIPE_UNAVAILABLE', message, details);
  }
  return new StripeIntegrationError('STRIPE_REQUEST_REJECTED', message, details);
}
