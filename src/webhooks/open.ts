import { openLedger } from '../ledger/open';
import type { Ledger } from '../ledger/types';
import { QuotaService } from '../quota/service';
import { eventHooks } from './hooks';
import { migrateWebhooks } from './schema';
import { WebhookStore } from './store';

export interface OpenedServices {
  readonly ledger: Ledger;
  readonly quota: QuotaService;
  readonly webhooks: WebhookStore;
  close(): Promise<void>;
}

/**
 * Opens the ledger with the outbound-event hooks wired in (ledger batches and
 * quota transactions write their events in the same transaction) and the
 * webhook tables migrated. Whoever mutates billing and wants webhooks opens
 * the ledger this way: serve, the CLI, the Flowise plugin.
 */
export async function openWithEvents(target: string, opts: { actor?: string; quotaActor?: string; onEventError?: (e: unknown) => void; poolSize?: number } = {}): Promise<OpenedServices> {
  const hooks = eventHooks({ onError: opts.onEventError });
  const ledger = await openLedger(target, { actor: opts.actor, onBatch: hooks.onBatch, poolSize: opts.poolSize });
  try {
    await migrateWebhooks(ledger.dialect);
  } catch (e) {
    await ledger.close().catch(() => undefined);
    throw e;
  }
  const quota = new QuotaService(ledger, { actor: opts.quotaActor ?? opts.actor, inTransaction: hooks.inTransaction });
  return { ledger, quota, webhooks: new WebhookStore(ledger.dialect), close: () => ledger.close() };
}

