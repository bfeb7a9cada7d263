import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BillingError, ValidationError } from '../errors';
import type { Dialect } from './dialect';
import { type LedgerOptions, SqlLedger } from './sql-ledger';
import { postgresDialect } from './postgres';
import { redactUrl } from './redact';
import { sqliteDialect, sqliteHasTable, type SqliteOptions } from './sqlite';

const MIGRATIONS_TABLE = 'billing_schema_migrations';

export interface OpenLedgerOptions extends LedgerOptions {
  readonly sqlite?: Omit<SqliteOptions, 'path'>;
  readonly poolSize?: number;
  /**
   * false: open only a ledger that already exists (read commands): no file,
   * directory, schema or table is created, and a missing ledger is
   * LEDGER_NOT_FOUND ("no ledger at …"). Default true.
   */
  readonly create?: boolean;
}

/** Where a ledger lives, parsed once; `display` is safe to print (no password). */
export type LedgerTarget =
  | { readonly kind: 'sqlite'; readonly path: string; readonly display: string }
  | { readonly kind: 'memory'; readonly display: ':memory:' }
  | { readonly kind: 'postgres'; readonly url: string; readonly schema: string | null; readonly display: string };

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

const SCHEMA = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Parses a ledger location: a `postgres://` / `postgresql://` URL, `:memory:`,
 * or an SQLite file path. Any other `scheme://` is refused rather than taken
 * for a file name. Errors never carry the location itself (it may hold a
 * password), only what is wrong with it.
 */
export function ledgerTarget(target: string): LedgerTarget {
  if (typeof target !== 'string' || target.trim() === '') throw new ValidationError('The ledger location is empty: give an SQLite file path or a postgres:// URL');
  if (target === ':memory:') return { kind: 'memory', display: ':memory:' };
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(target)?.[1];
  if (scheme !== undefined && !isPostgresUrl(target)) {
    throw new ValidationError(`Unsupported ledger location scheme "${scheme.toLowerCase()}://": give an SQLite file path or a postgres:// URL`, { scheme: scheme.toLowerCase() });
  }
  if (scheme === undefined) return { kind: 'sqlite', path: target, display: path.resolve(target) };
  let u: URL;
  try {
    u = new URL(target);
  } catch {
    // Node's TypeError carries the whole input (password included): never pass it on.
    throw new ValidationError('The ledger location is not a valid postgres:// URL (check the host, a port of 1–65535, and that special characters in the user or password are %-encoded)');
  }
  if (!u.hostname && !u.searchParams.get('host')) throw new ValidationError('The postgres:// URL has no host');
  const schema = u.searchParams.get('schema');
  if (schema !== null && !SCHEMA.test(schema)) {
    throw new ValidationError('The postgres:// URL\'s ?schema= must be a lower-case SQL identifier (a-z, 0-9, _; at most 63 characters, not starting with a digit)', {
      schemaLength: schema.length,
    });
  }
  return { kind: 'postgres', url: target, schema, display: redactUrl(target) };
}

/** Whether the ledger's own bookkeeping table is there; a connection failure is rethrown. */
async function ledgerExists(d: Dialect): Promise<boolean> {
  try {
    await d.read((c) => c.query(`SELECT version FROM ${MIGRATIONS_TABLE} LIMIT 1`));
    return true;
  } catch (e) {
    const err = e as { code?: unknown; message?: unknown };
    // PostgreSQL: undefined table / schema; SQLite: "no such table".
    if (err?.code === '42P01' || err?.code === '3F000' || /no such table/i.test(String(err?.message))) return false;
    throw e;
  }
}

function notFound(t: LedgerTarget, why: string): BillingError {
  return new BillingError('LEDGER_NOT_FOUND', `No ledger at ${t.display}${t.kind === 'postgres' && t.schema ? ` (schema ${t.schema})` : ''}: ${why}`, {
    location: t.display,
  });
}

/**
 * Opens a ledger: a `postgres://` URL, or an SQLite file path (created with
 * its folder when missing, unless `create: false`). Migrates on open.
 */
export async function openLedger(target: string = defaultLedgerLocation(), opts: OpenLedgerOptions = {}): Promise<SqlLedger> {
  const t = ledgerTarget(target);
  const create = opts.create ?? true;
  if (!create && t.kind === 'sqlite' && !fs.existsSync(t.path)) throw notFound(t, 'the file does not exist (create it with a write command, e.g. `flowise-billing migrate`)');
  if (!create && t.kind === 'memory') throw notFound(t, 'an in-memory ledger is always new');
  // Asked read-only first: opening the dialect would switch a foreign SQLite file (e.g. Flowise's own database) to WAL mode.
  if (!create && t.kind === 'sqlite' && !sqliteHasTable(t.path, MIGRATIONS_TABLE)) throw notFound(t, 'the file is not a flowise-billing ledger');
  let d: Dialect;
  try {
    d = t.kind === 'postgres' ? postgresDialect({ url: t.url, poolSize: opts.poolSize }) : sqliteDialect({ path: t.kind === 'memory' ? ':memory:' : t.path, ...opts.sqlite });
  } catch (e) {
    // A setting refused before anything opened (FLOWISE_BILLING_SQLITE_CHECKPOINT) is the caller's to fix, not the database's.
    if (e instanceof ValidationError) throw e;
    throw new BillingError('DATABASE_ERROR', `Cannot open the ledger at ${t.display}: ${e instanceof Error ? e.message : String(e)}`, { location: t.display });
  }
  if (!create) {
    let exists: boolean;
    try {
      exists = await ledgerExists(d);
    } catch (e) {
      await d.close().catch(() => undefined);
      throw new BillingError('DATABASE_ERROR', `Cannot reach the ledger at ${t.display}: ${e instanceof Error ? e.message : String(e)}`, { location: t.display });
    }
    if (!exists) {
      await d.close().catch(() => undefined);
      throw notFound(t, t.kind === 'postgres' ? 'the database has no ledger tables there (run `flowise-billing migrate` with this --db to create them)' : 'the file is not a flowise-billing ledger');
    }
  }
  return SqlLedger.open(d, opts);
}
