import type { PoolClient } from 'pg';
import { redactUrl } from './redact';
import { type Dialect, insertRows, placeholders, type Row, type SqlConnection, type SqlValue, type TableWrite } from './dialect';

export interface PostgresOptions {
  /** postgres://user:pass@host:port/db[?schema=name]; `schema` puts the ledger's tables in that schema. */
  readonly url: string;
  readonly poolSize?: number;
}

const numbered = new Map<string, string>();
/** `?` → `$1, $2, …` (the ledger's SQL never has `?` inside literals). */
function toPg(sql: string): string {
  let out = numbered.get(sql);
  if (out === undefined) {
    let i = 0;
    out = sql.replace(/\?/g, () => `$${++i}`);
    if (numbered.size > 2000) numbered.clear();
    numbered.set(sql, out);
  }
  return out;
}

function connection(client: PoolClient): SqlConnection {
  const values = (params: readonly SqlValue[]) => params.map((p) => (typeof p === 'bigint' ? p.toString() : p));
  return {
    async query<T extends Row = Row>(sql: string, params: readonly SqlValue[] = []) {
      return (await client.query(toPg(sql), values(params))).rows as T[];
    },
    async run(sql: string, params: readonly SqlValue[] = []) {
      return (await client.query(toPg(sql), values(params))).rowCount ?? 0;
    },
  };
}

const MAX_PARAMS = 65_000;

/**
 * All of a batch's inserts and upserts as one statement of data-modifying
 * CTEs: one round trip instead of one per table. Foreign keys are checked at
 * the end of the statement, so rows may reference customers inserted by a
 * sibling CTE. Falls back to a statement per table past the parameter limit.
 */
async function writeMany(c: SqlConnection, writes: readonly TableWrite[]): Promise<void> {
  if (writes.length === 0) return;
  const params = writes.reduce((n, w) => n + w.rows.length * w.columns.length, 0);
  if (writes.length === 1 || params > MAX_PARAMS) {
    for (const w of writes) await insertRows(c, { maxParams: MAX_PARAMS } as Dialect, w.table, w.columns, w.rows, w.onConflict);
    return;
  }
  const tuple = (n: number) => `(${placeholders(n)})`;
  const parts = writes.map(
    (w, i) =>
      `w${i} AS (INSERT INTO ${w.table} (${w.columns.join(', ')}) VALUES ${w.rows.map(() => tuple(w.columns.length)).join(', ')} ${w.onConflict ?? ''} RETURNING 1)`,
  );
  await c.run(`WITH ${parts.join(',\n')} SELECT 1`, writes.flatMap((w) => w.rows.flat()));
}


export function postgresDialect(opts: PostgresOptions): Dialect {
  const u = new URL(opts.url);
  const schema = u.searchParams.get('schema');
  u.searchParams.delete('schema');
  if (schema && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new Error(`schema "${schema}" must be a lower-case SQL identifier`);
  }
  // Loaded on first use: a CLI call on SQLite never pays for the pg driver.
  const { Pool } = require('pg') as typeof import('pg');
  const pool = new Pool({
    connectionString: u.toString(),
    max: opts.poolSize ?? 8,
    options: schema ? `-c search_path=${schema}` : undefined,
  });
  // An idle client's error (server restart) must not crash the host process; the next query reconnects.
  pool.on('error', () => undefined);

  async function withClient<T>(fn: (client: PoolClient) => Promise<T>): Promise<T> {
    const client = await pool.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }

  async function transaction<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T> {
    return withClient(async (client) => {
      await client.query('BEGIN');
      try {
        const result = await fn(connection(client));
        await client.query('COMMIT');
        return result;
      } catch (e) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw e;
      }
    });
  }

  return {
    name: 'postgres',
    location: redactUrl(opts.url),
    forUpdate: 'FOR UPDATE',
    serialPrimaryKey: 'BIGSERIAL PRIMARY KEY',
    maxParams: 65_000,
    writeTransaction: (fn) => transaction(fn),
    migrationTransaction: (fn) =>
      transaction(async (c) => {
        // One migrator at a time across every process sharing the database.
        await c.query("SELECT pg_advisory_xact_lock(7243591, hashtext(current_setting('search_path')))");
        if (schema) await c.run(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
        return fn(c);
      }),
    read: (fn) => withClient((client) => fn(connection(client))),
    writeMany,
    isRetryableConflict: (e) => ['23505', '40001', '40P01'].includes(String((e as { code?: string })?.code)),
    close: () => pool.end(),
  };
}
