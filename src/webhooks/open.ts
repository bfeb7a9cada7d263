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

export interface OpenServicesOptions {
  /** The ledger's audit actor (and the quota's, unless quotaActor). */
  readonly actor?: string;
  readonly quotaActor?: string;
  /** An event that could not be written (it never fails its cause). */
  readonly onEventError?: (e: unknown) => void;
  readonly poolSize?: number;
  /**
   * false: open an existing ledger only, creating nothing (the CLI's reads).
   * The hooks are still wired, since a read may roll a period and close an
   * invoice; without webhook tables their writes are skipped under a savepoint.
   */
  readonly create?: boolean;
}

/**
 * The one place that builds billing services with the outbound-event hooks:
 * the ledger (batches write their events in the same transaction) and the
 * quota service (its transactions too), webhook tables migrated. Whoever
 * mutates billing and wants webhooks opens it this way: serve, every CLI
 * command, the Flowise plugin.
 */
export async function openWithEvents(target: string, opts: OpenServicesOptions = {}): Promise<OpenedServices> {
  const create = opts.create ?? true;
  const hooks = eventHooks({ onError: opts.onEventError });
  const ledger = await openLedger(target, { actor: opts.actor, onBatch: hooks.onBatch, poolSize: opts.poolSize, create });
  if (create) {
    try {
      await migrateWebhooks(ledger.dialect);
    } catch (e) {
      await ledger.close().catch(() => undefined);
      throw e;
    }
  }
  const quota = new QuotaService(ledger, { actor: opts.quotaActor ?? opts.actor, inTransaction: hooks.inTransaction });
  return { ledger, quota, webhooks: new WebhookStore(ledger.dialect), close: () => ledger.close() };
}
