import path from 'node:path';
import { defaultLedgerLocation, isPostgresUrl } from '../ledger/open';
import { openWithEvents } from '../webhooks/open';
import type { Ledger } from '../ledger/types';
import type { QuotaService } from '../quota/service';

/**
 * One ledger (and one quota service) per ledger location per process, shared
 * by every node and every prediction: opening a ledger migrates and starts a
 * connection pool, which must not happen per request. Keyed by the resolved
 * location, so two credentials naming the same database share it.
 */
export interface LedgerHandle {
  readonly ledger: Ledger;
  readonly quota: QuotaService;
  /** Where it lives, without any password. */
  readonly location: string;
}

const handles = new Map<string, Promise<LedgerHandle>>();

/**
 * The cache key: a URL as given, an SQLite path made absolute; empty means the default location. Any
 * `scheme://` stays as given, so opening it refuses the scheme (made absolute, `mysql://u:pw@h/db` was an
 * SQLite file under ./mysql:/u:pw@h/).
 */
export function ledgerKey(location: string | undefined | null, env: NodeJS.ProcessEnv = process.env): string {
  const target = (location ?? '').trim() || defaultLedgerLocation(env);
  return isPostgresUrl(target) || target === ':memory:' || URL_SCHEME.test(target) ? target : path.resolve(target);
}

const URL_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/**
 * Queue mode runs predictions in worker processes, usually other containers:
 * a SQLite ledger there is a file per worker, each with its own balances.
 * Said once per location on stderr (Flowise's log), not refused: workers on
 * one host sharing the file do work.
 */
function warnIfQueueModeSqlite(key: string, env: NodeJS.ProcessEnv): void {
  if (env.MODE !== 'queue' || isPostgresUrl(key)) return;
  process.emitWarning(
    `flowise-billing: MODE=queue with a SQLite ledger (${key}). Main and every worker must share one ledger: unless they all run on this host with this file, set FLOWISE_BILLING_DB=postgres://… (or the URL in the Billing Ledger credential).`,
    { code: 'FLOWISE_BILLING_SQLITE_IN_QUEUE_MODE' },
  );
}

export function sharedLedger(location?: string | null, opts: { actor?: string } = {}): Promise<LedgerHandle> {
  const key = ledgerKey(location);
  let h = handles.get(key);
  if (!h) {
    warnIfQueueModeSqlite(key, process.env);
    // Opened with the outbound-event hooks: alerts and refusals inside a prediction reach the webhook outbox in their own transaction.
    h = openWithEvents(key, { quotaActor: opts.actor ?? 'flowise' }).then(({ ledger, quota }) => ({ ledger, quota, location: ledger.location }));
    // A failed open (bad URL, database down) is not cached: the next prediction tries again.
    h.catch(() => handles.delete(key));
    handles.set(key, h);
  }
  return h;
}

/** Closes every shared ledger (tests, shutdown). */
export async function closeSharedLedgers(): Promise<void> {
  const all = [...handles.values()];
  handles.clear();
  await Promise.allSettled(all.map(async (h) => (await h).ledger.close()));
}
