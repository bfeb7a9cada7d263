import type Stripe from 'stripe';
import type { Ledger } from '../ledger/types';
import { NANOS_PER_METER_UNIT } from '../ledger/outbox';
import { ValidationError } from '../errors';
import { formatUsd } from '../money';
import { calendarDay } from '../period';
import { stripeCustomersFor, findMeter } from './customers';

export interface ReconcilePeriod {
  /** Inclusive, epoch ms (rounded down to a minute, as Stripe requires). */
  readonly start: number;
  /** Exclusive, epoch ms (rounded up to a minute). */
  readonly end: number;
}

export interface ReconcileLine {
  readonly customerId: string;
  readonly stripeCustomerId: string | null;
  readonly eventName: string;
  /** Σ outbox values (micro-USD) for events in the period: what the ledger owes Stripe. */
  readonly ledgerUnits: string;
  /** The same usage in exact ledger money (nano-USD → USD string); differs from ledgerUnits only by sub-micro-dollar carry. */
  readonly ledgerUsd: string;
  /** Σ of Stripe's meter event summaries for the customer and meter over the period. */
  readonly stripeUnits: string | null;
  /** stripe − ledger, in meter units (0 when reconciled). */
  readonly difference: string | null;
  readonly pendingEvents: number;
  readonly failedEvents: number;
}

export interface ReconcileReport {
  readonly period: { start: string; end: string };
  readonly unit: 'micro-USD';
  readonly ok: boolean;
  /** How long it waited for Stripe's summaries to catch up (see ReconcileOptions.settleMs). */
  readonly settledMs: number;
  readonly lines: readonly ReconcileLine[];
  readonly differences: readonly ReconcileLine[];
}

const MINUTE = 60_000;

/** `2026-11` → that UTC month; `2026-11-23` → that UTC day; otherwise `start..end` ISO instants. Default: the current UTC month. */
export function parsePeriod(spec: string | undefined, now: number = Date.now()): ReconcilePeriod {
  if (!spec) {
    const d = new Date(now);
    return { start: Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), 1), end: Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 1, 1) };
  }
  // A typed input error (VALIDATION_ERROR), not a RangeError the CLI reports as INTERNAL_ERROR.
  const refused = () => new ValidationError(`period "${spec}" must be YYYY-MM, YYYY-MM-DD or <ISO start>..<ISO end>`, { field: 'period', value: spec });
  // Days the calendar does not have (2026-13, 2026-02-30) are refused: Date.UTC would reconcile the next month instead
  // (and it reads the years 0–99 as 1900–1999, so dates before 1970 are refused too).
  let m = /^(\d{4})-(\d{2})$/.exec(spec);
  if (m) {
    const start = calendarDay(+m[1]!, +m[2]!, 1);
    if (start === null || start < 0) throw refused();
    return { start, end: Date.UTC(+m[1]!, +m[2]!, 1) };
  }
  m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(spec);
  if (m) {
    const start = calendarDay(+m[1]!, +m[2]!, +m[3]!);
    if (start === null || start < 0) throw refused();
    return { start, end: start + 86_400_000 };
  }
  const [a, b] = spec.split('..');
  const start = Date.parse(a ?? '');
  const end = Date.parse(b ?? '');
  if (!Number.isFinite(start) || !Number.isFinite(end) || end <= start) throw refused();
  return { start, end };
}

export interface ReconcileOptions {
  /**
   * Meter event summaries are eventually consistent (Stripe aggregates events
   * asynchronously), so a difference right after a sync may only be events not
   * yet counted. While differences remain, the Stripe side of those lines is
   * read again (after 1 s, 2 s, 4 s, … at most 10 s apart) until this window
   * has passed. Default 0: one read.
   */
  readonly settleMs?: number;
  /** For tests: how to wait. */
  readonly sleep?: (ms: number) => Promise<void>;
}

const realSleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Compares, per customer and meter, the ledger's metered usage in a period
 * (the outbox: written with each charge, so it is the ledger's own account in
 * Stripe's unit) with the sum of Stripe's meter event summaries. Like with
 * like: both sides are whole micro-USD meter units keyed by event timestamp.
 *
 * Events Stripe accepted but later dropped (it validates the customer and the
 * meter asynchronously) never reach the summaries: they stay a difference
 * after the settle window, on the line of the customer they belong to.
 */
export async function reconcile(ledger: Ledger, stripe: Stripe, period: ReconcilePeriod, opts: ReconcileOptions = {}): Promise<ReconcileReport> {
  const start = Math.floor(period.start / MINUTE) * MINUTE;
  const end = Math.ceil(period.end / MINUTE) * MINUTE;
  const rows = await ledger.dialect.read((c) =>
    c.query(
      `SELECT customer_id, event_name, SUM(value) AS units, SUM(amount_nanos) AS nanos,
              SUM(CASE WHEN status = 'pending' THEN 1 ELSE 0 END) AS pending,
              SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS failed
         FROM billing_stripe_outbox WHERE occurred_at >= ? AND occurred_at < ?
        GROUP BY customer_id, event_name ORDER BY customer_id, event_name`,
      [start, end],
    ),
  );
  const mapping = await stripeCustomersFor(ledger, [...new Set(rows.map((r) => String(r.customer_id)))]);
  const meters = new Map<string, string | null>();
  const stripeUnitsOf = async (stripeCustomerId: string | null, eventName: string): Promise<bigint | null> => {
    if (!meters.has(eventName)) meters.set(eventName, await findMeter(stripe, eventName));
    const meterId = meters.get(eventName) ?? null;
    if (!stripeCustomerId || !meterId) return null;
    let units = 0n;
    for await (const s of stripe.billing.meters.listEventSummaries(meterId, { customer: stripeCustomerId, start_time: start / 1000, end_time: end / 1000, limit: 100 })) {
      // Summaries are JSON numbers; each is a sum of whole units, exact below 2^53 (≈ $9 billion in micro-USD).
      units += BigInt(Math.round(s.aggregated_value));
    }
    return units;
  };
  const lineFor = (base: Omit<ReconcileLine, 'stripeUnits' | 'difference'>, stripeUnits: bigint | null): ReconcileLine => ({
    ...base,
    stripeUnits: stripeUnits === null ? null : stripeUnits.toString(),
    difference: stripeUnits === null ? null : (stripeUnits - BigInt(base.ledgerUnits)).toString(),
  });

  const lines: ReconcileLine[] = [];
  for (const r of rows) {
    const customerId = String(r.customer_id);
    const eventName = String(r.event_name);
    const stripeCustomerId = mapping.get(customerId) ?? null;
    const base = {
      customerId,
      stripeCustomerId,
      eventName,
      ledgerUnits: BigInt(String(r.units)).toString(),
      ledgerUsd: formatUsd(BigInt(String(r.nanos))),
      pendingEvents: Number(r.pending),
      failedEvents: Number(r.failed),
    };
    lines.push(lineFor(base, await stripeUnitsOf(stripeCustomerId, eventName)));
  }

  const sleep = opts.sleep ?? realSleep;
  const deadline = Date.now() + (opts.settleMs ?? 0);
  let waited = 0;
  for (let pause = 1000; ; pause = Math.min(10_000, pause * 2)) {
    const open = lines.map((l, i) => [l, i] as const).filter(([l]) => l.difference !== '0' && l.difference !== null);
    const left = deadline - Date.now();
    if (open.length === 0 || left <= 0) break;
    const ms = Math.min(pause, left);
    await sleep(ms);
    waited += ms;
    for (const [l, i] of open) lines[i] = lineFor(l, await stripeUnitsOf(l.stripeCustomerId, l.eventName));
  }

  const differences = lines.filter((l) => l.difference !== '0');
  return {
    period: { start: new Date(start).toISOString(), end: new Date(end).toISOString() },
    unit: 'micro-USD',
    ok: differences.length === 0,
    settledMs: waited,
    lines,
    differences,
  };
}

/** Meter units (micro-USD) as a USD string, for printing. */
export function unitsToUsd(units: bigint): string {
  return formatUsd(units * NANOS_PER_METER_UNIT);
}
