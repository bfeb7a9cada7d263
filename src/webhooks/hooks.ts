import type { SqlConnection } from '../ledger/dialect';
import type { BatchOutcome } from '../ledger/types';
import { parseUsd, type Nanos } from '../money';
import type { QuotaEvent } from '../quota/service';
import { guarded, ledgerEvents, quotaEvent, writeEvents } from './events';

/** Used when neither the customer nor the '*' row sets a low-balance threshold. */
export const DEFAULT_LOW_BALANCE: Nanos = parseUsd('1.00');
const THRESHOLD_CACHE_MS = 5_000;

export interface EventHooks {
  /** Pass as LedgerOptions.onBatch. */
  readonly onBatch: (c: SqlConnection, outcomes: readonly BatchOutcome[], now: number) => Promise<void>;
  /** Pass as QuotaOptions.inTransaction. */
  readonly inTransaction: (c: SqlConnection, event: QuotaEvent) => Promise<void>;
}

/**
 * The in-transaction writers of outbound events, for whoever opens the
 * ledger (serve, the Flowise plugin, the CLI). The tables must be migrated
 * first (migrateWebhooks). Low-balance thresholds are operator settings, not
 * money, so they are cached a few seconds instead of read in every batch.
 */
export function eventHooks(opts: { clock?: () => number; onError?: (e: unknown) => void } = {}): EventHooks {
  const clock = opts.clock ?? Date.now;
  const onError = opts.onError ?? (() => undefined);
  let cache: { at: number; byCustomer: Map<string, Nanos> } | null = null;

  async function thresholds(c: SqlConnection, now: number): Promise<Map<string, Nanos>> {
    if (cache && now - cache.at < THRESHOLD_CACHE_MS) return cache.byCustomer;
    let byCustomer = cache?.byCustomer ?? new Map<string, Nanos>();
    await guarded(c, async () => {
      const rows = await c.query('SELECT customer_id, threshold FROM billing_webhook_balance_thresholds');
      byCustomer = new Map(rows.map((r) => [String(r.customer_id), BigInt(String(r.threshold))]));
    }, onError);
    cache = { at: now, byCustomer };
    return byCustomer;
  }

  return {
    async onBatch(c, outcomes, now) {
      // Nothing to look at unless money moved or was refused: the common hold/settle path stays one cheap loop.
      if (!outcomes.some((o) => o.error || o.operation === 'topUp' || o.operation === 'charge' || o.operation === 'settle')) return;
      const byCustomer = await thresholds(c, now);
      const events = ledgerEvents(outcomes, now, (id) => byCustomer.get(id) ?? byCustomer.get('*') ?? DEFAULT_LOW_BALANCE);
      if (events.length > 0) await guarded(c, () => writeEvents(c, events, now).then(() => undefined), onError);
    },
    async inTransaction(c, event) {
      const now = clock();
      const e = quotaEvent(event, now);
      if (!e) return;
      await guarded(c, () => writeEvents(c, [e], now).then(() => undefined), onError);
    },
  };
}

