import type { PoolClient } from 'pg';
import { ValidationError } from '../errors';
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

const values = (params: readonly SqlValue[]) => params.map((p) => (typeof p === 'bigint' ? p.toString() : p));
const ignore = () => undefined;

/**
 * One borrowed client as the ledger's SqlConnection, over a pipelining
 * client: a statement is written to the socket at once, even while earlier
 * ones are unanswered, and the server runs them in order. `send` writes a
 * statement whose answer nobody waits for (BEGIN, the batch's final write);
 * its failure is reported by the next statement on this connection, before
 * that statement's own, so callers see errors in the order the database
 * raised them, as if every statement had been awaited.
 */
class PgConnection implements SqlConnection {
  private unanswered: Promise<unknown>[] = [];

  constructor(readonly client: PoolClient) {}

  send(sql: string, params: readonly SqlValue[] = []): void {
    const p = this.client.query(toPg(sql), values(params));
    p.catch(ignore); // observed later, by settle()
    this.unanswered.push(p);
  }

  /** Waits for every sent statement; throws the first failure among them. */
  async settle(): Promise<void> {
    const sent = this.unanswered;
    this.unanswered = [];
    for (const p of sent) await p;
  }

  private async exec(sql: string, params: readonly SqlValue[]) {
    const p = this.client.query(toPg(sql), values(params));
    if (this.unanswered.length) {
      p.catch(ignore); // after a failed statement this one fails too ("transaction is aborted"): report the first
      await this.settle();
    }
    return p;
  }

  async query<T extends Row = Row>(sql: string, params: readonly SqlValue[] = []) {
    return (await this.exec(sql, params)).rows as T[];
  }

  async run(sql: string, params: readonly SqlValue[] = []) {
    return (await this.exec(sql, params)).rowCount ?? 0;
  }
}

const MAX_PARAMS = 65_000;

/**
 * All of a batch's inserts and upserts as one statement of data-modifying
 * CTEs: one round trip instead of one per table. Foreign keys are checked at
 * the end of the statement, so rows may reference customers inserted by a
 * sibling CTE. Falls back to a statement per table past the parameter limit.
 * The statement is sent, not awaited: it travels with whatever follows it
 * (usually COMMIT), and its failure is reported by that next statement.
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
  const sql = `WITH ${parts.join(',\n')} SELECT 1`;
  const all = writes.flatMap((w) => w.rows.flat());
  if (c instanceof PgConnection) c.send(sql, all);
  else await c.run(sql, all);
}

export function postgresDialect(opts: PostgresOptions): Dialect {
  let u: URL;
  try {
    u = new URL(opts.url);
  } catch {
    // Node's ERR_INVALID_URL carries the whole input, password included: never pass it on.
    throw new ValidationError('The PostgreSQL URL is not a valid URL (postgres://user:password@host:port/database)', { field: 'url' });
  }
  const schema = u.searchParams.get('schema');
  u.searchParams.delete('schema');
  if (schema && !/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new ValidationError('The PostgreSQL URL\'s ?schema= must be a lower-case SQL identifier (letters, digits, _; at most 63)', { field: 'schema' });
  }
  // Loaded on first use: a CLI call on SQLite never pays for the pg driver.
  const { Pool } = require('pg') as typeof import('pg');
  const pool = new Pool({
    connectionString: u.toString(),
    max: opts.poolSize ?? 8,
    options: schema ? `-c search_path=${schema}` : undefined,
    // A server that accepts TCP but never answers must not hang callers forever.
    connectionTimeoutMillis: 15_000,
    keepAlive: true,
    // Statements are written without waiting for the previous answer (see PgConnection): fewer round trips.
    pipeline: true,
  });
  const secrets = [opts.url, u.toString(), u.password, decodeURIComponent(u.password)].filter((s) => s.length >= 3);
  const scrub = (e: unknown) => scrubSecrets(e, secrets);
  // An idle client's error (server restart) must not crash the host process; the pool drops that client.
  pool.on('error', () => undefined);

  /**
   * Borrows a client for `fn`. While borrowed, pg-pool removes its own 'error'
   * listener, so without this one a dropped connection (server restart,
   * pg_terminate_backend) is an unhandled 'error' event that ends the process.
   * A client that failed is destroyed on release, so the next caller gets a
   * fresh connection once the server is back.
   */
  async function withClient<T>(fn: (client: PoolClient) => Promise<T>): Promise<T> {
    let client: PoolClient;
    try {
      client = await pool.connect();
    } catch (e) {
      throw scrub(e);
    }
    let broken: Error | undefined;
    const onError = (e: Error) => {
      broken = e;
    };
    client.on('error', onError);
    try {
      return await fn(client);
    } catch (e) {
      if (!isSqlStateError(e)) broken ??= e instanceof Error ? e : new Error(String(e));
      throw scrub(e);
    } finally {
      client.removeListener('error', onError);
      client.release(broken);
    }
  }

  /** Reads on one borrowed client; statements left unanswered by `fn` are awaited before it goes back to the pool. */
  function onClient<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T> {
    return withClient(async (client) => {
      const c = new PgConnection(client);
      try {
        const result = await fn(c);
        await c.settle();
        return result;
      } finally {
        await c.settle().catch(ignore);
      }
    });
  }

  /**
   * BEGIN is sent together with the transaction's first statement, and
   * COMMIT together with its last write: a ledger batch (load, then write)
   * costs two round trips.
   */
  async function transaction<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T> {
    return withClient(async (client) => {
      const c = new PgConnection(client);
      c.send('BEGIN');
      try {
        const result = await fn(c);
        const commit = client.query('COMMIT');
        commit.catch(ignore);
        // A failed statement before COMMIT makes the server answer COMMIT with a rollback, not an error: settle() reports it.
        await c.settle();
        await commit;
        return result;
      } catch (e) {
        await c.settle().catch(ignore);
        // A failed ROLLBACK means the connection is gone; withClient then destroys the client.
        await client.query('ROLLBACK').catch((rollbackError: unknown) => {
          throw isSqlStateError(e) ? rollbackError : e;
        });
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
    read: (fn) => onClient(fn),
    writeMany,
    isRetryableConflict: (e) => ['23505', '40001', '40P01'].includes(String((e as { code?: string })?.code)),
    close: () => pool.end().catch((e: unknown) => Promise.reject(scrub(e))),
  };
}

/** A server-side SQL error (it carries a five-character SQLSTATE); the connection is still usable after ROLLBACK. */
function isSqlStateError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  // Class 08 (connection exception) and 57P (operator intervention: shutdown, terminated backend) leave the connection unusable.
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && !/^(08|57P)/.test(code);
}

/**
 * Removes the connection string and password from an error's text before it
 * leaves the dialect. The error keeps its class and SQLSTATE `code`, which
 * callers use to tell a unique violation from an outage.
 */
function scrubSecrets(e: unknown, secrets: readonly string[]): unknown {
  if (!(e instanceof Error)) return e;
  const clean = (text: string) => {
    let out = text;
    for (const s of secrets) out = out.split(s).join('***');
    return out.replace(/postgres(ql)?:\/\/[^\s'"]*/gi, (m) => redactUrl(m));
  };
  e.message = clean(e.message);
  if (e.stack) e.stack = clean(e.stack);
  for (const k of ['input', 'detail', 'hint', 'where', 'connectionString'] as const) {
    const v = (e as unknown as Record<string, unknown>)[k];
    if (typeof v === 'string') (e as unknown as Record<string, unknown>)[k] = clean(v);
  }
  return e;
}
