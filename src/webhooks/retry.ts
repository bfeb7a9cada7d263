/**
 * When to try a failed delivery again: exponential from `baseMs`, capped at
 * `maxMs`, with 50–100 % jitter so a receiver coming back is not hit by every
 * retry at once. Pure, so it is tested without a network.
 */
export interface RetryPolicy {
  readonly baseMs: number;
  readonly maxMs: number;
  /** After this many failed attempts a delivery is marked failed (operators can retry it). */
  readonly maxAttempts: number;
}

export const DEFAULT_RETRY: RetryPolicy = { baseMs: 5_000, maxMs: 3_600_000, maxAttempts: 20 };

export function retryDelayMs(attempts: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const exp = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempts - 1));
  return Math.round(exp * (0.5 + 0.5 * random()));
}

/**
 * The pause a receiver asked for in a Retry-After header (delay-seconds or an
 * HTTP date), ms; null when absent or unreadable. Standard Webhooks: a 429 or
 * 503 may say when to come back, and the next attempt should wait for it.
 */
export function retryAfterMs(header: string | null, now: number): number | null {
  const v = header?.trim();
  if (!v) return null;
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/** 2xx is delivered; everything else (including 3xx: receivers must not redirect a webhook) is retried, except 410 Gone (deliver.ts disables the endpoint). */
export function delivered(status: number): boolean {
  return status >= 200 && status < 300;
}
