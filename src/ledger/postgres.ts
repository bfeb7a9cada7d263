import type { PoolClient, QueryResult } from 'pg';
import { ValidationError } from '../errors';
import { cteSql, toPg } from './pg-sql';
import { redactUrl } from './redact';
import { type Dialect, insertRows, markDatabaseError, type QueryOptions, type Row, type SqlConnection, type SqlValue, type TableWrite, type WriteOptions } from './dialect';

export interface PostgresOptions {
  /** postgres://user:pass@host:port/db[?schema=name]; `schema` puts the ledger's tables in that schema. */
  readonly url: string;
  readonly poolSize?: number;
}

/**
 * Named (server-side prepared) statements: parsed and planned once per
 * connection instead of on every call, which halves the server's CPU per
 * ledger operation (planning is most of it). Only statements the caller marks
 * `prepare` are named, and a process names at most MAX_NAMED, so each pooled
 * connection keeps a bounded set. A marked lookup is named only with a short
 * parameter list: PostgreSQL soon reuses one generic plan for a prepared
 * statement, and for a long IN list made while a table was still small that
 * plan can be a sequential scan that stays as the table grows (seen: 32-key
 * lookups at 5 ms). Short lists on a key always get an index scan.
 */
const MAX_NAMED = 100;
const MAX_NAMED_LOOKUP_PARAMS = 4;
/** Writes of batches of a few operations; a large batch's write is planned once per batch anyway, and would keep a large plan per connection. */
const MAX_NAMED_WRITE_PARAMS = 256;
const HOT_AFTER = 3;
const named = new Map<string, string>();
const uses = new Map<string, number>();
function statementName(text: string): string | undefined {
  const name = named.get(text);
  if (name !== undefined || named.size >= MAX_NAMED) return name;
  const n = (uses.get(text) ?? 0) + 1;
  if (n < HOT_AFTER) {
    if (uses.size > 2000) uses.clear();
    uses.set(text, n);
    return undefined;
  }
  uses.delete(text);
  const fresh = `fb_${named.size}`;
  named.set(text, fresh);
  return fresh;
}

/**
 * A prepared `SELECT *` whose table changed shape (a newer process migrated
 * the schema) fails with "cached plan must not change result type" on every
 * connection that prepared it. Identified by the server's routine name,
 * which does not depend on the server's language.
 */
function isStalePlan(e: unknown): boolean {
  const err = e as { code?: unknown; routine?: unknown } | null;
  return err?.code === '0A000' && err.routine === 'RevalidateCachedQuery';
}

const values = (params: readonly SqlValue[]) => params.map((p) => (typeof p === 'bigint' ? p.toString() : p));
const ignore = () => undefined;

/**
 * One borrowed client as the ledger's SqlConnection, over a pipelining
 * client: a statement is written to the socket at once, even while earlier
 * ones are unanswered, and the server runs them in order. Errors still reach
 * callers as if every statement had been awaited before the next was sent:
 * - a statement sent while earlier ones were unanswered fails with the first
 *   failure among them (not with the "transaction is aborted" it got itself);
 * - `send` writes a statement nobody waits for (BEGIN, the batch's final
 *   write); its failure is reported by the next statement, or by `settle`.
 */
class PgConnection implements SqlConnection {
  /** Sent statements whose failure nobody has been told of yet. */
  private unreported: Promise<unknown>[] = [];
  /** The last statement sent, and whether it has been answered. */
  private last: Promise<unknown> = Promise.resolve();
  private lastAnswered = true;
  private corked = false;

  constructor(readonly client: PoolClient) {}

  /**
   * Writes a statement. Statements written in the same tick (a batch's
   * reads; its write and COMMIT) leave in one socket write: one system call
   * and one packet for the server to read, instead of one each.
   */
  private write(sql: string, params: readonly SqlValue[], opts?: QueryOptions) {
    if (!this.corked) {
      const socket = this.client.connection.stream;
      this.corked = true;
      socket.cork();
      process.nextTick(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    const text = toPg(sql);
    const named =
      opts?.prepare === 'write'
        ? params.length <= MAX_NAMED_WRITE_PARAMS
        : opts?.prepare === true && (opts.longestList ?? params.length) <= MAX_NAMED_LOOKUP_PARAMS && params.length <= MAX_NAMED_WRITE_PARAMS;
    const name = named && params.length ? statementName(text) : undefined;
    // A callback rather than the driver's promise: one promise per statement instead of two.
    return new Promise<QueryResult>((resolve, reject) => {
      const done = (e: Error | null, r: QueryResult) => (e ? reject(e) : resolve(r));
      if (name) this.client.query({ name, text, values: values(params) }, done);
      else this.client.query(text, values(params), done);
    });
  }

  /** Writes a statement queued behind the unanswered ones: its result is theirs first (see the class comment). */
  submit(sql: string, params: readonly SqlValue[] = [], opts?: QueryOptions): Promise<QueryResult> {
    const own = this.write(sql, params, opts);
    const mine = this.lastAnswered
      ? own
      : this.last.then(
          () => own,
          (e: unknown) => {
            own.catch(ignore);
            throw e;
          },
        );
    this.last = mine;
    this.lastAnswered = false;
    // Registered before any caller's reaction, so a caller resuming after this answer already sees it answered.
    const answered = () => {
      if (this.last === mine) this.lastAnswered = true;
    };
    mine.then(answered, answered);
    return mine;
  }

  send(sql: string, params: readonly SqlValue[] = [], opts?: QueryOptions): void {
    const p = this.submit(sql, params, opts);
    p.catch(ignore); // reported later, by the next statement or settle()
    this.unreported.push(p);
  }

  /** Waits for every sent statement; throws the first failure among them. */
  async settle(): Promise<void> {
    const sent = this.unreported;
    this.unreported = [];
    for (const p of sent) await p;
  }

  /** Waits until every statement written so far has been answered, ignoring failures. */
  async drain(): Promise<void> {
    this.unreported = [];
    await this.last.catch(ignore);
  }

  /** ROLLBACK after a failure: not queued behind the failed statements' results (the server runs it after them anyway). */
  rollback(): Promise<unknown> {
    return this.write('ROLLBACK', []);
  }

  private async exec(sql: string, params: readonly SqlValue[], opts?: QueryOptions) {
    const p = this.submit(sql, params, opts);
    if (this.unreported.length) {
      p.catch(ignore); // after a failed statement this one fails too ("transaction is aborted"): report the first
      await this.settle();
    }
    return p;
  }

  async query<T extends Row = Row>(sql: string, params: readonly SqlValue[] = [], opts?: QueryOptions) {
    return (await this.exec(sql, params, opts)).rows as T[];
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
  const sql = cteSql(writes);
  const all = new Array<SqlValue>(params);
  let i = 0;
  for (const w of writes) for (const row of w.rows) for (const v of row) all[i++] = typeof v === 'bigint' ? v.toString() : v;
  // An INSERT … ON CONFLICT finds rows only through its unique indexes: a generic plan is always right.
  if (c instanceof PgConnection) c.send(sql, all, { prepare: 'write' });
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
  const scrub = (e: unknown) => markDatabaseError(scrubSecrets(e, secrets));
  // An idle client's error (server restart) must not crash the host process; the pool drops that client.
  pool.on('error', () => undefined);
  // A new client is handed to its borrower from inside the parser loop that read the server's
  // ReadyForQuery; a FATAL message in the same packet (pg_terminate_backend just after connecting)
  // is emitted before withClient attaches its listener. This permanent one keeps that from being an
  // unhandled 'error' event; the client is then unqueryable, and its borrower's first query fails.
  pool.on('connect', (client) => client.on('error', ignore));

  /** Bumped when the schema changed under prepared statements; older connections are closed instead of reused. */
  let generation = 0;
  const bornIn = new WeakMap<PoolClient, number>();
  async function borrow(): Promise<PoolClient> {
    for (;;) {
      const client = await pool.connect();
      const born = bornIn.get(client);
      if (born === undefined) bornIn.set(client, generation);
      if (born === undefined || born === generation) return client;
      client.release(true);
    }
  }

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
      client = await borrow();
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
      if (isStalePlan(e)) {
        // Every connection prepared before the schema changed holds stale plans: retire them all.
        generation++;
        broken ??= e as Error;
      }
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
        // Nothing of this borrower's may still be on the wire when the next one gets the client.
        await c.drain();
      }
    });
  }

  /**
   * BEGIN is sent together with the transaction's first statement, and
   * COMMIT together with its last write: a ledger batch (load, then write)
   * costs two round trips.
   */
  async function transaction<T>(fn: (c: SqlConnection) => Promise<T> | T, opts?: WriteOptions): Promise<T> {
    return withClient(async (client) => {
      const c = new PgConnection(client);
      c.send('BEGIN');
      // Travels with BEGIN and the first statement: no round trip of its own.
      if (opts?.durability === 'deferred') c.send('SET LOCAL synchronous_commit TO off');
      try {
        const result = await fn(c);
        const commit = c.submit('COMMIT');
        commit.catch(ignore);
        // A failed statement before COMMIT makes the server answer COMMIT with a rollback, not an error: settle() reports it.
        await c.settle();
        await commit;
        return result;
      } catch (e) {
        await c.drain();
        // A failed ROLLBACK means the connection is gone; withClient then destroys the client.
        await c.rollback().catch((rollbackError: unknown) => {
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
    writeTransaction: (fn, opts) => transaction(fn, opts),
    migrationTransaction: (fn) =>
      transaction(async (c) => {
        // One migrator at a time across every process sharing the database.
        await c.query("SELECT pg_advisory_xact_lock(7243591, hashtext(current_setting('search_path')))");
        if (schema) await c.run(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
        return fn(c);
      }),
    // A read has no side effects: one that met a stale prepared plan is run again on a fresh connection.
    read: (fn) => onClient(fn).catch((e: unknown) => (isStalePlan(e) ? onClient(fn) : Promise.reject(e))),
    writeMany,
    // A batch that met a stale prepared plan was rolled back; run again, it finds fresh connections.
    isRetryableConflict: (e) => ['23505', '40001', '40P01'].includes(String((e as { code?: string })?.code)) || isStalePlan(e),
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
