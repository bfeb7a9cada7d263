import path from 'node:path';
import { defaultLedgerLocation, isPostgresUrl, openLedger } from '../ledger/open';
import type { SqlLedger } from '../ledger/sql-ledger';
import { QuotaService } from '../quota/service';

/**
 * One ledger (and one quota service) per ledger location per process, shared
 * by every node and every prediction: opening a ledger migrates and starts a
 * connection pool, which must not happen per request. Keyed by the resolved
 * location, so two credentials naming the same database share it.
 */
export interface LedgerHandle {
  readonly ledger: SqlLedger;
  readonly quota: QuotaService;
  /** Where it lives, without any password. */
  readonly location: string;
}

const handles = new Map<string, Promise<LedgerHandle>>();

/** The cache key: a postgres URL as given, an SQLite path made absolute; empty means the default location. */
export function ledgerKey(location: string | undefined | null, env: NodeJS.ProcessEnv = process.env): string {
  const target = (location ?? '').trim() || defaultLedgerLocation(env);
  return isPostgresUrl(target) || target === ':memory:' ? target : path.resolve(target);
}

export function sharedLedger(location?: string | null, opts: { actor?: string } = {}): Promise<LedgerHandle> {
  const key = ledgerKey(location);
  let h = handles.get(key);
  if (!h) {
    h = openLedger(key).then((ledger) => ({ ledger, quota: new QuotaService(ledger, { actor: opts.actor ?? 'flowise' }), location: ledger.location }));
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
