import { postgresDialect } from '../../src/ledger/postgres';
import { SqlLedger } from '../../src/ledger/sql-ledger';
import { sqliteDialect } from '../../src/ledger/sqlite';
import type { Backend } from './backends';

/**
 * Opens a fresh ledger on `backend` by building its dialect directly.
 * (openLedger() loads drivers with a lazy `require('./postgres')`, which vitest
 * cannot resolve for .ts sources; the built package is unaffected.)
 */
export async function openFresh(backend: Backend): Promise<SqlLedger> {
  const target = await backend.freshTarget();
  const dialect = backend.name === 'postgres' ? postgresDialect({ url: target }) : sqliteDialect({ path: target });
  return SqlLedger.open(dialect);
}
