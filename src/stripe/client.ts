import Stripe from 'stripe';
import { StripeIntegrationError } from './errors';

export interface StripeClientOptions {
  /** Secret key; default STRIPE_SECRET_KEY. */
  readonly secretKey?: string;
  /** Another API base, e.g. a local Stripe-compatible server `http://127.0.0.1:12111`; default STRIPE_API_BASE or api.stripe.com. */
  readonly apiBase?: string;
  /** Per-request timeout (default 20 s). */
  readonly timeoutMs?: number;
  /**
   * SDK-level retries (default 0: the outbox and recharge code decide when to
   * retry and always pass their own deterministic idempotency keys).
   */
  readonly maxNetworkRetries?: number;
}

/** A Stripe SDK client for this integration. */
export function createStripeClient(opts: StripeClientOptions = {}, env: NodeJS.ProcessEnv = process.env): Stripe {
  const key = opts.secretKey ?? env.STRIPE_SECRET_KEY;
  if (!key) throw new StripeIntegrationError('STRIPE_NOT_CONFIGURED', 'No Stripe secret key: pass --stripe-key or set STRIPE_SECRET_KEY');
  const base = opts.apiBase ?? env.STRIPE_API_BASE;
  const config: Stripe.StripeConfig = {
    maxNetworkRetries: opts.maxNetworkRetries ?? 0,
    timeout: opts.timeoutMs ?? 20_000,
    appInfo: { name: 'flowise-billing' },
  };
  if (base) {
    const u = new URL(base);
    config.host = u.hostname;
    config.port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
    config.protocol = u.protocol === 'http:' ? 'http' : 'https';
  }
  return new Stripe(key, config);
}
