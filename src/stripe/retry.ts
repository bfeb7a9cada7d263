/**
 * Small pure pieces of the delivery loop, each with its own unit tests:
 * what a Stripe failure means, how long to wait, when to stop hammering.
 */

/** What a failed call tells us, read from a Stripe SDK error (or any thrown value). */
export interface FailureFacts {
  /** HTTP status, when an answer arrived. */
  readonly statusCode?: number;
  /** SDK error class name, e.g. `StripeConnectionError`. */
  readonly type?: string;
  /** Stripe's raw error type, e.g. `invalid_request_error`. */
  readonly rawType?: string;
  readonly code?: string;
  readonly message?: string;
  /** `Stripe-Should-Retry` response header, when present. */
  readonly shouldRetryHeader?: string;
}

/**
 * The closed set of delivery outcomes:
 * - `duplicate`: Stripe already holds an event with this identifier → counts as delivered.
 * - `retry`: rate limited, Stripe-side error or no answer → try again later with backoff.
 * - `rejected`: Stripe refused this event (bad value, unknown customer, timestamp out of window) → failed; retrying cannot help.
 * - `fatal`: the whole sync is misconfigured (wrong key, no permission) → stop, do not blame the event.
 */
export type DeliveryVerdict = 'duplicate' | 'retry' | 'rejected' | 'fatal';

/** Stripe's message for a meter event whose identifier it has already seen; it carries no `code`. */
const DUPLICATE_IDENTIFIER = /^An event already exists with identifier /;

export function factsOf(e: unknown): FailureFacts {
  if (typeof e !== 'object' || e === null) return { message: String(e) };
  const err = e as { statusCode?: unknown; type?: unknown; rawType?: unknown; code?: unknown; message?: unknown; headers?: Record<string, unknown> };
  const header = err.headers?.['stripe-should-retry'];
  return {
    statusCode: typeof err.statusCode === 'number' ? err.statusCode : undefined,
    type: typeof err.type === 'string' ? err.type : undefined,
    rawType: typeof err.rawType === 'string' ? err.rawType : undefined,
    code: typeof err.code === 'string' ? err.code : undefined,
    message: typeof err.message === 'string' ? err.message : undefined,
    shouldRetryHeader: typeof header === 'string' ? header : undefined,
  };
}

/** Classifies one failed meter-event POST. Precedence: duplicate, fatal, retry, rejected. */
export function classifyFailure(f: FailureFacts): DeliveryVerdict {
  if (f.statusCode === 400 && f.message !== undefined && DUPLICATE_IDENTIFIER.test(f.message)) return 'duplicate';
  if (f.statusCode === 401 || f.statusCode === 403 || f.type === 'StripeAuthenticationError' || f.type === 'StripePermissionError') return 'fatal';
  if (shouldRetry(f)) return 'retry';
  return 'rejected';
}

/**
 * Whether a failure is worth another try: no answer at all (connection reset,
 * timeout), 409 (concurrent idempotent request), 429 (rate limit or lock
 * timeout) and any 5xx. Stripe's explicit `Stripe-Should-Retry` header wins.
 */
export function shouldRetry(f: FailureFacts): boolean {
  if (f.shouldRetryHeader === 'true') return true;
  if (f.shouldRetryHeader === 'false') return false;
  if (f.statusCode === undefined) return f.type === undefined || f.type === 'StripeConnectionError' || f.type === 'StripeAPIError';
  return f.statusCode === 409 || f.statusCode === 429 || f.statusCode >= 500;
}

export interface BackoffOptions {
  /** First delay (attempt 1), default 500 ms. */
  readonly baseMs?: number;
  /** Largest delay, default 60 s. */
  readonly capMs?: number;
}

/**
 * Delay before retry number `attempt` (1 = first retry): exponential,
 * capped, then jittered to 50–100 % so a crowd of failed deliveries does not
 * come back at the same instant. `random` is injectable for tests.
 */
export function backoffMs(attempt: number, opts: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = opts.baseMs ?? 500;
  const cap = opts.capMs ?? 60_000;
  const exp = Math.min(cap, base * 2 ** Math.max(0, Math.min(attempt - 1, 30)));
  return Math.round(exp * (0.5 + 0.5 * Math.min(1, Math.max(0, random()))));
}

export interface BreakerOptions {
  /** Consecutive failures that open the circuit (default 5). */
  readonly failureThreshold?: number;
  /** How long it stays open before one probe is let through (default 5 s); doubles on each failed probe. */
  readonly cooldownMs?: number;
  /** Longest cooldown (default 2 minutes). */
  readonly maxCooldownMs?: number;
}

export type BreakerState = 'closed' | 'open' | 'half-open';

/**
 * Circuit breaker: after `failureThreshold` consecutive failures it opens and
 * refuses calls for `cooldownMs`; then it lets exactly one probe through
 * (half-open). A successful probe closes it; a failed one reopens it with a
 * doubled cooldown (up to `maxCooldownMs`). Time is passed in, so it is pure.
 */
export class CircuitBreaker {
  private failures = 0;
  private openedAt = 0;
  private cooldown: number;
  private probing = false;
  private stateName: BreakerState = 'closed';
  readonly failureThreshold: number;
  readonly baseCooldownMs: number;
  readonly maxCooldownMs: number;

  constructor(opts: BreakerOptions = {}) {
    this.failureThreshold = opts.failureThreshold ?? 5;
    this.baseCooldownMs = opts.cooldownMs ?? 5_000;
    this.maxCooldownMs = opts.maxCooldownMs ?? 120_000;
    this.cooldown = this.baseCooldownMs;
  }

  state(now: number): BreakerState {
    if (this.stateName === 'open' && now - this.openedAt >= this.cooldown) return 'half-open';
    return this.stateName;
  }

  /** Milliseconds until a call may go through (0 when it may now). */
  waitMs(now: number): number {
    const s = this.state(now);
    if (s === 'closed') return 0;
    if (s === 'half-open') return this.probing ? this.cooldown : 0;
    return this.openedAt + this.cooldown - now;
  }

  /** Asks to make one call; true when allowed. In half-open only one probe is allowed at a time. */
  tryAcquire(now: number): boolean {
    const s = this.state(now);
    if (s === 'closed') return true;
    if (s === 'open' || this.probing) return false;
    this.probing = true;
    this.stateName = 'half-open';
    return true;
  }

  success(): void {
    this.failures = 0;
    this.probing = false;
    this.cooldown = this.baseCooldownMs;
    this.stateName = 'closed';
  }

  failure(now: number): void {
    if (this.stateName === 'half-open' || this.probing) {
      this.probing = false;
      this.cooldown = Math.min(this.maxCooldownMs, this.cooldown * 2);
      this.stateName = 'open';
      this.openedAt = now;
      return;
    }
    this.failures += 1;
    if (this.failures >= this.failureThreshold && this.stateName === 'closed') {
      this.stateName = 'open';
      this.openedAt = now;
    }
  }
}

/** Token bucket: at most `perSecond` calls a second, bursts up to `burst`. */
export class RateLimiter {
  private tokens: number;
  private last: number;

  constructor(
    readonly perSecond: number,
    readonly burst: number = Math.max(1, Math.ceil(perSecond / 10)),
    now: number = Date.now(),
  ) {
    this.tokens = this.burst;
    this.last = now;
  }

  /** Milliseconds to wait before the next call; takes the token when 0. */
  take(now: number): number {
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.perSecond) / 1000);
    this.last = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.ceil(((1 - this.tokens) * 1000) / this.perSecond);
  }
}
