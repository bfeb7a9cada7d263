import Stripe from 'stripe';
import { ValidationError } from '../errors';
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
    const u = apiBaseUrl(base);
    config.host = u.hostname;
    config.port = u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80;
    config.protocol = u.protocol === 'http:' ? 'http' : 'https';
  }
  return new Stripe(key, config);
}

/**
 * The SDK takes only host, port and protocol: anything else in the base would be dropped without a word
 * (an ftp:// base spoke https, a path prefix or user:password@ vanished), and a base that is not a URL
 * was an INTERNAL_ERROR. The base is not echoed: it may carry a password.
 */
function apiBaseUrl(base: string): URL {
  const refuse = (why: string) => new ValidationError(`STRIPE_API_BASE (or --stripe-api) ${why}, e.g. http://127.0.0.1:12111`, { field: 'STRIPE_API_BASE' });
  let u: URL;
  try {
    u = new URL(base);
  } catch {
    throw refuse('is not a URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw refuse('must be http or https');
  if (u.username || u.password) throw refuse('must not carry credentials');
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) throw refuse('must be a scheme, host and port only (the SDK ignores a path)');
  return u;
}
