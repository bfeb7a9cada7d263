/**
 * The seam between the ledger and a database. SQL is written once with `?`
 * placeholders in the subset SQLite and PostgreSQL share (multi-row VALUES,
 * ON CONFLICT upserts); a dialect supplies the few pieces that differ, so the
 * ledger never branches on which database it talks to.
 */
export type SqlValue = string | number | bigint | null;

const fromDatabase = new WeakSet<object>();

/** Marks an error as the database's (it left a dialect's connection): callers outside the ledger answer it as DATABASE_ERROR. */
export function markDatabaseError<E>(e: E): E {
  if (typeof e === 'object' && e !== null) fromDatabase.add(e);
  return e;
}

/**
 * Whether an error came from the database rather than from our code: marked by the PostgreSQL dialect (an
 * outage, a terminated connection, a refused statement), or an SQLite error (SQLITE_BUSY, SQLITE_FULL, …).
 */
export function isDatabaseError(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const code = (e as { code?: unknown }).code;
  return fromDatabase.has(e) || (typeof code === 'string' && (code.startsWith('SQLITE_') || code === 'ERR_SQLITE_ERROR'));
}
export type Row = Record<string, unknown>;

export interface QueryOptions {
  /**
   * A statement run again and again (the ledger batch's lookups): a dialect
   * may keep it prepared on the connection. `write` marks an INSERT/upsert.
   */
  readonly prepare?: true | 'write';
  /**
   * For a lookup: the longest key list it carries, when it carries several
   * (its parameter count would overstate it). A dialect may prepare only
   * lookups by short lists (PostgreSQL: a generic plan made for a long list).
   */
  readonly longestList?: number;
}

export interface WriteOptions {
  /**
   * `deferred`: the commit need not wait for its log to reach the disk
   * (PostgreSQL's synchronous_commit off). The log is written in order, so the
   * next full commit on the same server (or the WAL writer, within a fraction
   * of a second) makes it durable too. Only for a write whose loss in a server
   * crash costs no money: a session admission, whose run's metered calls each
   * take a hold, a full commit, before the provider is called. SQLite ignores
   * it (its synchronous setting is the ledger's, for every commit).
   */
  readonly durability?: 'full' | 'deferred';
}

export interface SqlConnection {
  query<T extends Row = Row>(sql: string, params?: readonly SqlValue[], opts?: QueryOptions): Promise<T[]>;
  run(sql: string, params?: readonly SqlValue[]): Promise<number>;
}

/**
 * A connection whose driver answers synchronously (SQLite): the same
 * statements without a promise each, for a caller that has many in a row
 * (a ledger batch) and would otherwise allocate a promise and an await per step.
 */
export interface SyncSqlConnection extends SqlConnection {
  queryNow<T extends Row = Row>(sql: string, params?: readonly SqlValue[]): T[];
  runNow(sql: string, params: readonly SqlValue[]): number;
}

/** `c`'s synchronous face, or null. A wrapper around a connection (one that counts or pauses statements) has none. */
export function syncConnection(c: SqlConnection): SyncSqlConnection | null {
  return typeof (c as Partial<SyncSqlConnection>).queryNow === 'function' && typeof (c as Partial<SyncSqlConnection>).runNow === 'function' ? (c as SyncSqlConnection) : null;
}

export interface Dialect {
  readonly name: 'sqlite' | 'postgres';
  readonly location: string;
  /** `FOR UPDATE` where rows can be locked; empty where the whole database is (SQLite's single writer). */
  readonly forUpdate: string;
  /** Column definition of an auto-incrementing 64-bit primary key. */
  readonly serialPrimaryKey: string;
  /**
   * Set where a table is by default a rowid b-tree plus a second b-tree for its
   * primary key (SQLite): the clause that clusters it on the key instead
   * (` WITHOUT ROWID`), one b-tree written per row instead of two.
   */
  readonly withoutRowid?: string;
  /**
   * Set where the writer numbers journal entries and audit lines itself from
   * max(seq) (SQLite: one writer at a time, and an INTEGER PRIMARY KEY counts
   * per table); unset where both tables draw from one sequence (PostgreSQL).
   * See fold-rows.ts.
   */
  readonly explicitSeq?: true;
  /** Largest number of bound parameters one statement may carry. */
  readonly maxParams: number;
  /** SQLite: checkpoints a background thread has run in this process (sqlite.ts `checkpoint`). */
  readonly backgroundCheckpoints?: () => number;
  /**
   * Runs `fn` in a write transaction; commits when it resolves, rolls back when it throws. `fn` may
   * answer without a promise (a synchronous connection's work): a dialect then need not wait a turn.
   */
  writeTransaction<T>(fn: (c: SqlConnection) => Promise<T> | T, opts?: WriteOptions): Promise<T>;
  /** A consistent read outside any open write transaction of this process. */
  read<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T>;
  /** Serialises schema migration across processes (advisory lock / exclusive transaction). */
  migrationTransaction<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T>;
  /**
   * Writes several multi-row inserts/upserts in as few round trips as the
   * database allows (PostgreSQL: one statement of data-modifying CTEs).
   * Omitted: one statement per table.
   */
  writeMany?(c: SqlConnection, writes: readonly TableWrite[]): Promise<void>;
  /** True when `e` means a concurrent writer won a race (unique violation, deadlock, serialization failure): worth one more try. */
  isRetryableConflict(e: unknown): boolean;
  close(): Promise<void>;
}

/** Rows for one table, written with one multi-row INSERT (`onConflict` makes it an upsert). */
export interface TableWrite {
  readonly table: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly SqlValue[])[];
  readonly onConflict?: string;
}

/** Writes each table in order (customers first: other tables reference them). */
export async function writeTables(c: SqlConnection, d: Dialect, writes: readonly TableWrite[]): Promise<void> {
  // A synchronous driver (SQLite) runs the statements one after another without a promise between them.
  const sync = syncConnection(c);
  if (sync) return writeTablesNow(sync, d, writes);
  if (d.writeMany) return d.writeMany(c, writes.every((w) => w.rows.length > 0) ? writes : writes.filter((w) => w.rows.length > 0));
  for (const w of writes) {
    const n = w.rows.length;
    if (n === 0) continue;
    // One statement (the usual batch): run here, without insertRows' own promise per table.
    if (n * w.columns.length <= d.maxParams) await c.run(insertSql(w.table, w.columns, n, w.onConflict ?? ''), n === 1 ? w.rows[0]! : flatten(w.rows, w.columns.length));
    else await insertRows(c, d, w.table, w.columns, w.rows, w.onConflict);
  }
}

/** writeTables on a synchronous connection: each table's statements run one after another, no promise between them. */
export function writeTablesNow(c: SyncSqlConnection, d: Pick<Dialect, 'maxParams'>, writes: readonly TableWrite[]): void {
  const run = (sql: string, params: readonly SqlValue[]) => void c.runNow(sql, params);
  for (const w of writes) forEachInsert(d.maxParams, w, run);
}

const placeholderCache: string[] = [];
/** `?, ?, ?` for n values (cached: the same few shapes recur on every batch). */
export function placeholders(n: number): string {
  let out = placeholderCache[n];
  if (out === undefined) {
    out = Array.from({ length: n }, () => '?').join(', ');
    if (n < 4096) placeholderCache[n] = out;
  }
  return out;
}

/**
 * The SQL of a multi-row INSERT, built once per column list, table, conflict
 * clause and row count, so prepared statements are found by the same string.
 * Looked up by the column array's identity and the (constant) table and
 * clause strings, whose hashes V8 keeps: no key string is built per call.
 * Kept for up to 64 rows.
 */
const insertCache = new WeakMap<readonly string[], Map<string, Map<string, string[]>>>();
function insertSql(table: string, columns: readonly string[], rowCount: number, onConflict: string): string {
  let byTable = insertCache.get(columns);
  if (byTable === undefined) insertCache.set(columns, (byTable = new Map()));
  let byClause = byTable.get(table);
  if (byClause === undefined) byTable.set(table, (byClause = new Map()));
  let byCount = byClause.get(onConflict);
  if (byCount === undefined) byClause.set(onConflict, (byCount = []));
  let sql = byCount[rowCount];
  if (sql === undefined) {
    const tuple = `(${placeholders(columns.length)})`;
    sql = `INSERT INTO ${table} (${columns.join(', ')}) VALUES ${Array.from({ length: rowCount }, () => tuple).join(', ')} ${onConflict}`;
    // Larger statements are rare and long; their own rows cost far more than building the text again.
    if (rowCount <= 64) byCount[rowCount] = sql;
  }
  return sql;
}

/**
 * Calls `run` with each statement (text and parameters) that writes `w`'s rows
 * within `maxParams` parameters. insertRows runs them one after another; a
 * dialect whose driver is synchronous (SQLite) runs them without waiting.
 */
export function forEachInsert(maxParams: number, w: TableWrite, run: (sql: string, params: readonly SqlValue[]) => void): void {
  const { rows, columns } = w;
  const perChunk = Math.max(1, Math.floor(maxParams / columns.length));
  for (let i = 0; i < rows.length; i += perChunk) {
    const chunk = rows.length <= perChunk ? rows : rows.slice(i, i + perChunk);
    run(insertSql(w.table, columns, chunk.length, w.onConflict ?? ''), chunk.length === 1 ? chunk[0]! : flatten(chunk, columns.length));
  }
}

/**
 * Multi-row INSERT (optionally an upsert) split into statements that respect
 * the dialect's parameter limit. One round trip per chunk instead of per row.
 */
export async function insertRows(
  c: SqlConnection,
  dialect: Dialect,
  table: string,
  columns: readonly string[],
  rows: readonly (readonly SqlValue[])[],
  onConflict = '',
): Promise<void> {
  const statements: Array<[string, readonly SqlValue[]]> = [];
  forEachInsert(dialect.maxParams, { table, columns, rows, onConflict }, (sql, params) => statements.push([sql, params]));
  for (const [sql, params] of statements) await c.run(sql, params);
}

/** The rows' values in one array (Array.prototype.flat was a visible share of a large batch's CPU). */
function flatten(rows: readonly (readonly SqlValue[])[], width: number): SqlValue[] {
  const out = new Array<SqlValue>(rows.length * width);
  let i = 0;
  for (const row of rows) for (const v of row) out[i++] = v;
  out.length = i;
  return out;
}

/** `ON CONFLICT (key) DO UPDATE SET col = excluded.col, …` for the given columns. */
export function upsertClause(key: string, columns: readonly string[]): string {
  return `ON CONFLICT (${key}) DO UPDATE SET ${columns.map((c) => `${c} = excluded.${c}`).join(', ')}`;
}
