import { describe, expect, it } from 'vitest';
import { floorDiv, meterEventIdentifier, meterEventName, DEFAULT_OUTBOX_SETTINGS } from '../src/ledger/outbox';
import { createStripeClient } from '../src/stripe/client';
import { meterTimestamp } from '../src/stripe/outbox';
import { parsePeriod } from '../src/stripe/reconcile';
import { runLanes, type LaneOutcome } from '../src/stripe/lanes';
import { backoffMs, CircuitBreaker, classifyFailure, RateLimiter, retryAfterMs, shouldRetry } from '../src/stripe/retry';

describe('shouldRetry', () => {
  it.each([
    [{ statusCode: 429, code: 'rate_limit' }, true],
    [{ statusCode: 429, code: 'lock_timeout', shouldRetryHeader: 'true' }, true],
    [{ statusCode: 500 }, true],
    [{ statusCode: 503 }, true],
    [{ statusCode: 409 }, true],
    [{ type: 'StripeConnectionError', message: 'socket hang up' }, true],
    [{ message: 'ECONNRESET' }, true],
    [{ statusCode: 400, message: 'Invalid integer' }, false],
    [{ statusCode: 404 }, false],
    [{ statusCode: 500, shouldRetryHeader: 'false' }, false],
    [{ statusCode: 400, shouldRetryHeader: 'true' }, true],
  ])('%j → %s', (facts, expected) => {
    expect(shouldRetry(facts)).toBe(expected);
  });
});

describe('createStripeClient', () => {
  it('a STRIPE_API_BASE the SDK cannot honour is a VALIDATION_ERROR that does not echo it; a plain base works', () => {
    const env = (base: string) => ({ STRIPE_SECRET_KEY: 'sk_test_x', STRIPE_API_BASE: base });
    for (const base of ['notaurl', 'ftp://127.0.0.1:12111', 'http://u:pw-secret@127.0.0.1:12111', 'http://127.0.0.1:12111/prefix']) {
      let err: { code?: string; message?: string } = {};
      try {
        createStripeClient({}, env(base));
      } catch (e) {
        err = e as typeof err;
      }
      expect(err.code, base).toBe('VALIDATION_ERROR');
      expect(err.message).toMatch(/STRIPE_API_BASE/);
      expect(err.message).not.toMatch(/pw-secret/);
    }
    expect(() => createStripeClient({}, env('http://127.0.0.1:12111/'))).not.toThrow();
    expect(() => createStripeClient({}, env('https://api.stripe.com'))).not.toThrow();
  });
});

describe('classifyFailure', () => {
  it('a duplicate identifier (400, no code, Stripe-Should-Retry: false) counts as delivered', () => {
    expect(classifyFailure({ statusCode: 400, rawType: 'invalid_request_error', message: 'An event already exists with identifier fb_ent_1.', shouldRetryHeader: 'false' })).toBe('duplicate');
  });
  it('auth failures stop the sync; other 4xx reject the event; 429/409 throttle; 5xx/network retry, even a saved 500', () => {
    expect(classifyFailure({ statusCode: 401, type: 'StripeAuthenticationError' })).toBe('fatal');
    expect(classifyFailure({ statusCode: 403 })).toBe('fatal');
    expect(classifyFailure({ statusCode: 400, message: 'Timestamp must be within the past 35 calendar days.' })).toBe('rejected');
    expect(classifyFailure({ statusCode: 429 })).toBe('throttled');
    expect(classifyFailure({ statusCode: 429, code: 'lock_timeout', shouldRetryHeader: 'true' })).toBe('throttled');
    expect(classifyFailure({ statusCode: 409 })).toBe('throttled');
    expect(classifyFailure({ statusCode: 500, shouldRetryHeader: 'false' })).toBe('retry');
    expect(classifyFailure({ statusCode: 400, message: 'Invalid integer', shouldRetryHeader: 'false' })).toBe('rejected');
    expect(classifyFailure({ statusCode: 502 })).toBe('retry');
    expect(classifyFailure({ type: 'StripeConnectionError' })).toBe('retry');
  });
});

describe('backoffMs', () => {
  it('doubles per attempt, is capped, and jitters within 50–100 %', () => {
    expect(backoffMs(1, { baseMs: 100 }, () => 1)).toBe(100);
    expect(backoffMs(1, { baseMs: 100 }, () => 0)).toBe(50);
    expect(backoffMs(4, { baseMs: 100 }, () => 1)).toBe(800);
    expect(backoffMs(30, { baseMs: 100, capMs: 5000 }, () => 1)).toBe(5000);
    expect(backoffMs(30, { baseMs: 100, capMs: 5000 }, () => 0)).toBe(2500);
    for (let i = 0; i < 200; i++) {
      const v = backoffMs(3, { baseMs: 100 });
      expect(v).toBeGreaterThanOrEqual(200);
      expect(v).toBeLessThanOrEqual(400);
    }
  });
  it('never overflows for huge attempt numbers', () => {
    expect(backoffMs(10_000, { baseMs: 500, capMs: 60_000 }, () => 0.5)).toBe(45_000);
  });
});

describe('CircuitBreaker', () => {
  it('opens after the threshold, lets one probe through after the cooldown, doubles the cooldown on a failed probe, closes on success', () => {
    const b = new CircuitBreaker({ failureThreshold: 3, cooldownMs: 1000, maxCooldownMs: 3000 });
    let t = 0;
    for (let i = 0; i < 2; i++) b.failure(t);
    expect(b.state(t)).toBe('closed');
    b.failure(t);
    expect(b.state(t)).toBe('open');
    expect(b.tryAcquire(t + 999)).toBe(false);
    expect(b.waitMs(t + 500)).toBe(500);
    t += 1000;
    expect(b.state(t)).toBe('half-open');
    expect(b.tryAcquire(t)).toBe(true);
    expect(b.tryAcquire(t)).toBe(false); // only one probe
    b.failure(t);
    expect(b.state(t + 1999)).toBe('open');
    expect(b.state(t + 2000)).toBe('half-open');
    t += 2000;
    expect(b.tryAcquire(t)).toBe(true);
    b.failure(t);
    expect(b.waitMs(t)).toBe(3000); // capped
    t += 3000;
    expect(b.tryAcquire(t)).toBe(true);
    b.success();
    expect(b.state(t)).toBe('closed');
    b.failure(t);
    expect(b.state(t)).toBe('closed'); // the count restarted
  });
});

describe('RateLimiter', () => {
  it('allows a burst, then one call per 1/rate seconds', () => {
    const r = new RateLimiter(10, 2, 0);
    expect(r.take(0)).toBe(0);
    expect(r.take(0)).toBe(0);
    expect(r.take(0)).toBe(100);
    expect(r.take(100)).toBe(0);
  });
});

describe('meter-event shape', () => {
  it('identifiers derive from the ledger entry and stay within 100 characters', () => {
    expect(meterEventIdentifier('ent_0123456789abcdef0123456789abcdef')).toBe('fb_ent_0123456789abcdef0123456789abcdef');
    expect(meterEventIdentifier('ent_0123456789abcdef0123456789abcdef').length).toBeLessThanOrEqual(100);
  });
  it('event names: one meter, or one per ChargeType', () => {
    expect(meterEventName(DEFAULT_OUTBOX_SETTINGS, 'Inference')).toBe('flowise_billing_usage');
    expect(meterEventName({ ...DEFAULT_OUTBOX_SETTINGS, perChargeType: true }, 'PaidPublicFlowRun')).toBe('flowise_billing_usage_paid_public_flow_run');
  });
  it('floorDiv rounds toward −∞ so refunds carry correctly', () => {
    expect(floorDiv(1999n, 1000n)).toBe(1n);
    expect(floorDiv(-1n, 1000n)).toBe(-1n);
    expect(floorDiv(-1000n, 1000n)).toBe(-1n);
    expect(floorDiv(-1001n, 1000n)).toBe(-2n);
  });
  it('timestamps are clamped into Stripe’s window (35 days back, 5 minutes ahead)', () => {
    const now = Date.parse('2026-11-23T10:00:00Z');
    expect(meterTimestamp(now - 1000, now)).toBe(now / 1000 - 1);
    expect(meterTimestamp(now - 40 * 86_400_000, now)).toBe(now / 1000 - 35 * 86_400 + 3600);
    expect(meterTimestamp(now + 3_600_000, now)).toBe(now / 1000);
  });
  it('periods: month, day, explicit range', () => {
    expect(parsePeriod('2026-11')).toEqual({ start: Date.parse('2026-11-01T00:00:00Z'), end: Date.parse('2026-12-01T00:00:00Z') });
    expect(parsePeriod('2026-11-23')).toEqual({ start: Date.parse('2026-11-23T00:00:00Z'), end: Date.parse('2026-11-24T00:00:00Z') });
    expect(parsePeriod(undefined, Date.parse('2026-02-10T00:00:00Z')).start).toBe(Date.parse('2026-02-01T00:00:00Z'));
    expect(() => parsePeriod('last week')).toThrow(/period/);
  });
  it('periods the calendar does not have are a VALIDATION_ERROR, not the next month or an INTERNAL_ERROR', () => {
    for (const spec of ['2026-13', '2026-00', '2026-02-30', '2026-04-31', '0099-03', 'last week', '2026-11-02..2026-11-01']) {
      expect(() => parsePeriod(spec), spec).toThrow(expect.objectContaining({ code: 'VALIDATION_ERROR', details: { field: 'period', value: spec } }));
    }
    expect(parsePeriod('2028-02-29')).toEqual({ start: Date.parse('2028-02-29T00:00:00Z'), end: Date.parse('2028-03-01T00:00:00Z') });
    expect(parsePeriod('2026-12')).toEqual({ start: Date.parse('2026-12-01T00:00:00Z'), end: Date.parse('2027-01-01T00:00:00Z') });
  });
});

describe('retryAfterMs', () => {
  it('reads delta-seconds and HTTP dates, caps at 60 s, ignores garbage', () => {
    const now = Date.parse('2026-11-30T10:00:00Z');
    expect(retryAfterMs('2', now)).toBe(2000);
    expect(retryAfterMs('0.5', now)).toBe(500);
    expect(retryAfterMs('Mon, 30 Nov 2026 10:00:03 GMT', now)).toBe(3000);
    expect(retryAfterMs('Mon, 30 Nov 2026 09:00:00 GMT', now)).toBe(0);
    expect(retryAfterMs('3600', now)).toBe(60_000);
    expect(retryAfterMs('soon', now)).toBeUndefined();
    expect(retryAfterMs(undefined, now)).toBeUndefined();
  });
});

describe('CircuitBreaker.acquire', () => {
  it('go while closed; refused while open; then one probe and the others wait for it', () => {
    const b = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 100 });
    expect(b.acquire(0)).toBe('go');
    b.failure(0);
    expect(b.acquire(50)).toBe('refused');
    expect(b.acquire(100)).toBe('probe');
    expect(b.acquire(100)).toBe('wait');
    b.success();
    expect(b.acquire(101)).toBe('go');
  });
});

describe('runLanes', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const items = (spec: Record<string, number>) => Object.entries(spec).flatMap(([lane, n]) => Array.from({ length: n }, (_, i) => ({ lane, i })));

  it('one item in flight per lane, lanes in parallel up to the worker count, every item once', async () => {
    const inFlight = new Map<string, number>();
    let most = 0;
    let mostLanes = 0;
    const seen: string[] = [];
    const run = await runLanes(items({ a: 6, b: 3, c: 3, d: 3 }), (x) => x.lane, async (x): Promise<LaneOutcome> => {
      inFlight.set(x.lane, (inFlight.get(x.lane) ?? 0) + 1);
      most = Math.max(most, ...inFlight.values());
      mostLanes = Math.max(mostLanes, [...inFlight.values()].filter((n) => n > 0).length);
      await sleep(5);
      inFlight.set(x.lane, inFlight.get(x.lane)! - 1);
      seen.push(`${x.lane}${x.i}`);
      return { kind: 'next' };
    }, { workers: 3, breaker: new CircuitBreaker(), clock: Date.now, deadline: Date.now() + 10_000 });
    expect(run).toEqual({ unattempted: [], deferred: [] });
    expect(most).toBe(1);
    expect(mostLanes).toBe(3);
    expect(seen.sort()).toHaveLength(15);
    expect(new Set(seen).size).toBe(15);
    // Within a lane, order is kept.
    expect(seen.filter((s) => s.startsWith('a'))).toEqual(['a0', 'a1', 'a2', 'a3', 'a4', 'a5']);
  });

  it('a throttled lane waits (others go on); a wait past the deadline gives its items back', async () => {
    const calls: Array<[string, number]> = [];
    const t0 = Date.now();
    let throttledOnce = false;
    const run = await runLanes(items({ slow: 2, fast: 3, stuck: 2 }), (x) => x.lane, async (x): Promise<LaneOutcome> => {
      calls.push([x.lane, Date.now() - t0]);
      if (x.lane === 'slow' && !throttledOnce) {
        throttledOnce = true;
        return { kind: 'throttled', waitMs: 150 };
      }
      if (x.lane === 'stuck') return { kind: 'throttled', waitMs: 60_000 };
      return { kind: 'next' };
    }, { workers: 3, breaker: new CircuitBreaker(), clock: Date.now, deadline: Date.now() + 5_000 });
    expect(run.unattempted).toEqual([]);
    expect(run.deferred.map((d) => [d.item.lane, d.delayMs])).toEqual([['stuck', 60_000], ['stuck', 60_000]]);
    const slow = calls.filter(([l]) => l === 'slow').map(([, t]) => t);
    expect(slow).toHaveLength(3);
    expect(slow[1]! - slow[0]!).toBeGreaterThanOrEqual(140);
    expect(Math.max(...calls.filter(([l]) => l === 'fast').map(([, t]) => t))).toBeLessThan(140);
  });

  it('an open breaker stops the round; a probe makes the others wait, then they go on at once', async () => {
    const breaker = new CircuitBreaker({ failureThreshold: 1, cooldownMs: 50 });
    breaker.failure(Date.now());
    const early = await runLanes(items({ a: 2 }), (x) => x.lane, async () => ({ kind: 'next' }) as LaneOutcome, { workers: 2, breaker, clock: Date.now, deadline: Date.now() + 1000 });
    expect(early.unattempted).toHaveLength(2);
    await sleep(60);
    const order: string[] = [];
    const run = await runLanes(items({ a: 1, b: 1, c: 1 }), (x) => x.lane, async (x, probe): Promise<LaneOutcome> => {
      order.push(`${x.lane}${probe ? ':probe' : ''}`);
      await sleep(20);
      if (probe) breaker.success();
      return { kind: 'next' };
    }, { workers: 3, breaker, clock: Date.now, deadline: Date.now() + 1000 });
    expect(run.unattempted).toEqual([]);
    expect(order[0]).toMatch(/:probe$/);
    expect(order.filter((o) => o.endsWith(':probe'))).toHaveLength(1);
    expect(order).toHaveLength(3);
  });
});
