import os from 'node:os';
import path from 'node:path';
import { type LedgerOptions, SqlLedger } from './sql-ledger';
import { postgresDialect } from './postgres';
import { sqliteDialect, type SqliteOptions } from './sqlite';

export interface OpenLedgerOptions extends LedgerOptions {
  readonly sqlite?: Omit<SqliteOptions, 'path'>;
  readonly poolSize?: number;
}

/**
 * Where the ledger lives when nobody says: `FLOWISE_BILLING_DB`, else
 * `billing.sqlite` in the Flowise home (`DATABASE_PATH`, default ~/.flowise),
 * next to Flowise's own database.
 */
export function defaultLedgerLocation(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FLOWISE_BILLING_DB) return env.FLOWISE_BILLING_DB;
  const home = env.DATABASE_PATH || path.join(os.homedir(), '.flowise');
  return path.join(home, 'billing.sqlite');
}

export function isPostgresUrl(target: string): boolean {
  return /^postgres(ql)?:\/\//i.test(target);
}

/** Opens a ledger: a `postgres://` URL, or an SQLite file path (created with its folder when missing). Migrates on open. */
export async function openLedger(target: string = defaultLedgerLocation(), opts: OpenLedgerOptions = {}): Promise<SqlLedger> {
  const dialect = isPostgresUrl(target)
    ? postgresDialect({ url: target, poolSize: opts.poolSize })
    : sqliteDialect({ path: target, ...opts.sqlite });
  return SqlLedger.open(dialect, opts);
}
