import type { Row, TableWrite } from './dialect';
import type { EntryRow } from './rows';

/**
 * The Stripe meter-event outbox, as seen from the ledger: which entries owe
 * Stripe a meter event, and the rows that record them. Written by batch.ts in
 * the same transaction as the entries, so a charge and its event commit
 * together or not at all. Delivery lives in src/stripe (an adapter); this file
 * only knows tables, never the Stripe SDK.
 *
 * Unit: one meter unit is one micro-USD (1e-6 USD) of ledger money actually
 * collected (settle/charge) or given back (refund, a negative value). The
 * ledger keeps nano-USD; each event's whole-unit value is the change of
 * floor(running total of nanos / 1000) for its customer and meter, so the sum
 * Stripe holds is always floor(ledger total / 1000): never more than 1 µ$
 * below the exact ledger total, and never drifting however many events.
 */
export const NANOS_PER_METER_UNIT = 1000n;
export const OUTBOX_SETTINGS_KEY = 'outbox';

/** Charge types that move money but are not usage (e.g. a Stripe refund of a top-up debited from the balance). */
export const NON_USAGE_CHARGE_TYPES: ReadonlySet<string> = new Set(['StripeTopUpRefund', 'InvoiceCollection']);

export interface OutboxSettings {
  readonly enabled: boolean;
  /** Event name of the single meter, or the prefix of per-ChargeType meters. */
  readonly eventName: string;
  /** One meter per ChargeType (`<eventName>_<charge_type>`) instead of one for all usage. */
  readonly perChargeType: boolean;
}

export const DEFAULT_OUTBOX_SETTINGS: OutboxSettings = { enabled: true, eventName: 'flowise_billing_usage', perChargeType: false };

const METER_STATE_COLUMNS = ['customer_id', 'event_name', 'nanos_total'] as const;
export const OUTBOX_COLUMNS = [
  'id', 'entry_id', 'customer_id', 'event_name', 'kind', 'charge_id', 'amount_nanos', 'value', 'occurred_at',
  'status', 'attempts', 'next_attempt_at', 'agg_id', 'last_error', 'delivered_at', 'created_at',
] as const;

/** The meter event `identifier` for a ledger entry: deterministic, ≤ 100 characters, so a resend is a duplicate Stripe rejects. */
export function meterEventIdentifier(entryId: string): string {
  return `fb_${entryId}`;
}

/** `InferenceRun` → `inference_run`. */
function snake(s: string): string {
  return s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/[^A-Za-z0-9]+/g, '_').toLowerCase();
}

export function meterEventName(settings: OutboxSettings, chargeType: string | null): string {
  if (!settings.perChargeType) return settings.eventName;
  return `${settings.eventName}_${snake(chargeType ?? 'other')}`.slice(0, 100);
}

/** Floor division for signed bigints (refunds make totals go down). */
export function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? q - 1n : q;
}

function isMetered(e: EntryRow): boolean {
  return (e.type === 'settle' || e.type === 'charge' || e.type === 'refund') && e.amount !== 0n && !NON_USAGE_CHARGE_TYPES.has(e.chargeType ?? '');
}

export function parseOutboxSettings(text: string): OutboxSettings {
  const v = JSON.parse(text) as Partial<OutboxSettings>;
  return {
    enabled: v.enabled === true,
    eventName: typeof v.eventName === 'string' && v.eventName ? v.eventName : DEFAULT_OUTBOX_SETTINGS.eventName,
    perChargeType: v.perChargeType === true,
  };
}

/**
 * The read the outbox needs for a batch: its settings and the running totals
 * of the customers the batch may charge (`customersSql` selects their ids;
 * its parameters come first, then OUTBOX_SETTINGS_KEY). batch.ts sends it
 * with the batch's other reads, in the same round trip; the totals are
 * written only by batches holding the customer's lock.
 */
export function outboxStateSql(customersSql: string): string {
  return `SELECT s.value AS settings, m.customer_id, m.event_name, m.nanos_total
       FROM billing_stripe_settings s
       LEFT JOIN billing_stripe_meter_state m ON m.customer_id IN (${customersSql})
      WHERE s.key = ?`;
}

/** outboxStateSql's parameters for the same customers (batch-reads.ts). */
export function outboxStateParams(customers: readonly string[]): string[] {
  return [...customers, OUTBOX_SETTINGS_KEY];
}

/** The operations whose entries may owe Stripe a meter event: a batch with one of them loads the outbox state. */
export const METERED_OPERATIONS: ReadonlySet<string> = new Set(['settle', 'charge', 'refund']);

/**
 * The writes that put this batch's metered entries into the outbox, from the
 * rows of `outboxStateSql`: two table writes for the whole batch, never a
 * round trip per operation. Returns [] when the outbox is off.
 */
export function outboxWrites(state: readonly Row[] | null, entries: readonly EntryRow[], now: number): TableWrite[] {
  const metered = entries.filter(isMetered);
  if (metered.length === 0) return [];
  // A metered entry from an operation outside METERED_OPERATIONS would otherwise skip its meter event silently.
  if (state === null) throw new Error('outbox state was not loaded for a batch with metered entries');
  const rows = state;
  if (!rows[0]) return [];
  const settings = parseOutboxSettings(String(rows[0].settings));
  if (!settings.enabled) return [];

  const totals = new Map<string, bigint>();
  for (const r of rows) {
    if (r.customer_id !== null && r.customer_id !== undefined) totals.set(`${String(r.customer_id)}\u0000${String(r.event_name)}`, BigInt(String(r.nanos_total)));
  }
  const touched = new Set<string>();
  const outbox: (string | bigint | number | null)[][] = [];
  for (const e of metered) {
    const eventName = meterEventName(settings, e.chargeType);
    const k = `${e.customerId}\u0000${eventName}`;
    const before = totals.get(k) ?? 0n;
    const usage = -e.amount; // settle/charge take money (negative entry) = positive usage; a refund gives it back
    const after = before + usage;
    totals.set(k, after);
    touched.add(k);
    const value = floorDiv(after, NANOS_PER_METER_UNIT) - floorDiv(before, NANOS_PER_METER_UNIT);
    // A value of 0 (a sub-micro-dollar charge) has nothing to tell Stripe; its nanos stay in the running total.
    if (value === 0n) continue;
    outbox.push([
      meterEventIdentifier(e.id), e.id, e.customerId, eventName, e.type, e.chargeId, usage, value, e.createdAt,
      'pending', 0, now, null, null, null, now,
    ]);
  }
  return [
    {
      table: 'billing_stripe_meter_state',
      columns: METER_STATE_COLUMNS,
      rows: [...touched].map((k) => {
        const [customerId, eventName] = k.split('\u0000') as [string, string];
        return [customerId, eventName, totals.get(k)!];
      }),
      onConflict: 'ON CONFLICT (customer_id, event_name) DO UPDATE SET nanos_total = excluded.nanos_total',
    },
    { table: 'billing_stripe_outbox', columns: OUTBOX_COLUMNS, rows: outbox },
  ];
}
