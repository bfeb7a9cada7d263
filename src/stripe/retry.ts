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
  /** `Retry-After` response header, when present (seconds or an HTTP date). */
  readonly retryAfterHeader?: string;
}

/**
 * The closed set of meter-event delivery outcomes:
 * - `duplicate`: Stripe already holds an event with this identifier → counts as delivered.
 * - `throttled`: 429 (rate or concurrency limit, lock timeout) or 409 → wait on this customer
 *   and meter only; the event is not at fault and Stripe is up, so the breaker is not told.
 * - `retry`: a server failure (5xx) or no answer → try again later with backoff; counts
 *   towards the circuit breaker.
 * - `rejected`: Stripe refused this event (bad value, unknown customer, timestamp out of window) → failed; retrying cannot help.
 * - `fatal`: the whole sync is misconfigured (wrong key, no permission) → stop, do not blame the event.
 */
export type DeliveryVerdict = 'duplicate' | 'throttled' | 'retry' | 'rejected' | 'fatal';

/** Stripe's message for a meter event whose identifier it has already seen; it carries no `code`. */
const DUPLICATE_IDENTIFIER = /^An event already exists with identifier /;

export function factsOf(e: unknown): FailureFacts {
  if (typeof e !== 'object' || e === null) return { message: String(e) };
  const err = e as { statusCode?: unknown; type?: unknown; rawType?: unknown; code?: unknown; message?: unknown; headers?: Record<string, unknown> };
  const header = (name: string) => {
    const v = err.headers?.[name];
    return typeof v === 'string' ? v : undefined;
  };
  return {
    statusCode: typeof err.statusCode === 'number' ? err.statusCode : undefined,
    type: typeof err.type === 'string' ? err.type : undefined,
    rawType: typeof err.rawType === 'string' ? err.rawType : undefined,
    code: typeof err.code === 'string' ? err.code : undefined,
    message: typeof err.message === 'string' ? err.message : undefined,
    shouldRetryHeader: header('stripe-should-retry'),
    retryAfterHeader: header('retry-after'),
  };
}

/**
 * Classifies one failed meter-event POST. Precedence: duplicate, fatal,
 * throttled, retry, rejected.
 *
 * Every delivery attempt carries a fresh idempotency key (the identifier is
 * what prevents double counting), so `Stripe-Should-Retry: false` on a 5xx —
 * "this key's saved 500 would only be replayed" — does not stop a retry.
 */
export function classifyFailure(f: FailureFacts): DeliveryVerdict {
  if (f.statusCode === 400 && f.message !== undefined && DUPLICATE_IDENTIFIER.test(f.message)) return 'duplicate';
  if (f.statusCode === 401 || f.statusCode === 403 || f.type === 'StripeAuthenticationError' || f.type === 'StripePermissionError') return 'fatal';
  if (f.statusCode === 429 || f.statusCode === 409) return 'throttled';
  if (f.statusCode === undefined) return f.type === undefined || f.type === 'StripeConnectionError' || f.type === 'StripeAPIError' ? 'retry' : 'rejected';
  if (f.statusCode >= 500) return 'retry';
  if (f.shouldRetryHeader === 'true') return 'throttled';
  return 'rejected';
}

/**
 * Whether a failure is worth another try **with the same idempotency key**
 * (auto-recharge, customer creation): no answer at all (connection reset,
 * timeout), 409 (concurrent idempotent request), 429 (rate limit or lock
 * timeout) and any 5xx. Stripe's explicit `Stripe-Should-Retry` header wins:
 * a saved 500 replays for its key, so it says false.
 */
export function shouldRetry(f: FailureFacts): boolean {
  if (f.shouldRetryHeader === 'true') return true;
  if (f.shouldRetryHeader === 'false') return false;
  if (f.statusCode === undefined) return f.type === undefined || f.type === 'StripeConnectionError' || f.type === 'StripeAPIError';
  return f.statusCode === 409 || f.statusCode === 429 || f.statusCode >= 500;
}

/** Longest `Retry-After` honoured; a larger value is treated as this. */
export const MAX_RETRY_AFTER_MS = 60_000;

/** `Retry-After` as milliseconds (delta-seconds or an HTTP date), capped; undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now: number = Date.now()): number | undefined {
  if (header === undefined) return undefined;
  const t = header.trim();
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(t)) ms = Number(t) * 1000;
  else {
    const at = Date.parse(t);
    if (!Number.isFinite(at)) return undefined;
    ms = at - now;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, Math.ceil(ms)));
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
    const a = this.acquire(now);
    return a === 'go' || a === 'probe';
  }

  /**
   * Asks to make one call: `go` (closed), `probe` (this call is the half-open
   * probe; report its result with success/failure), `wait` (a probe is in
   * flight: wait for its result, then ask again) or `refused` (open).
   */
  acquire(now: number): 'go' | 'probe' | 'wait' | 'refused' {
    const s = this.state(now);
    if (s === 'closed') return 'go';
    if (s === 'open') return 'refused';
    if (this.probing) return 'wait';
    this.probing = true;
    this.stateName = 'half-open';
    return 'probe';
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
