import fs from 'node:fs';
import path from 'node:path';
import { type Dialect, type Row, type SqlConnection, type SqlValue, type SyncSqlConnection } from './dialect';
import { Mutex } from './mutex';
import { ValidationError } from '../errors';
import { type Checkpointer, sqliteCheckpointer } from './checkpointer';

/**
 * The writer's automatic checkpoint: every 16,000 pages of WAL (~32 MB at the
 * 2 KiB pages of a new file, ~64 MB in a file made with SQLite's 4 KiB). A
 * checkpoint runs inside the COMMIT that crosses the threshold and fsyncs
 * there, a stall of that one operation (20–35 ms here); SQLite's default of
 * 1,000 pages made it one in ~116 of a lone caller's operations. With
 * `checkpoint: 'background'` a thread checkpoints instead (./checkpointer.ts)
 * and this becomes the backstop, BACKSTOP_PAGES. The WAL
 * file keeps its largest size while the ledger is open and goes when it closes.
 */
const WAL_AUTOCHECKPOINT_PAGES = 16_000;
const BACKSTOP_PAGES = 64_000;

/**
 * Page size of a new ledger file. Every B-tree an operation touches is a whole
 * page in the WAL, and most of a lone operation's pages carry one small row
 * change: at 2 KiB a lone caller writes about 40 % fewer WAL bytes than at
 * SQLite's default 4 KiB, and its checkpoints copy and fsync as much less.
 */
const PAGE_SIZE = 2048;

export const SQLITE_CHECKPOINTS = ['inline', 'background'] as const;
export type SqliteCheckpoint = (typeof SQLITE_CHECKPOINTS)[number];

/** The checkpoint mode asked for, by option or FLOWISE_BILLING_SQLITE_CHECKPOINT; anything else is refused. */
export function sqliteCheckpointMode(choice: string | undefined = process.env.FLOWISE_BILLING_SQLITE_CHECKPOINT): SqliteCheckpoint {
  const v = choice === undefined || choice.trim() === '' ? 'inline' : choice.trim();
  if (!(SQLITE_CHECKPOINTS as readonly string[]).includes(v)) {
    throw new ValidationError(`The SQLite checkpoint mode (FLOWISE_BILLING_SQLITE_CHECKPOINT or sqlite.checkpoint) must be one of ${SQLITE_CHECKPOINTS.join(', ')}`, { field: 'FLOWISE_BILLING_SQLITE_CHECKPOINT', allowed: [...SQLITE_CHECKPOINTS] });
  }
  return v as SqliteCheckpoint;
}

export interface SqliteOptions {
  /** File path, or ":memory:". */
  readonly path: string;
  /**
   * NORMAL (default, WAL mode): every commit survives a process crash (what
   * SIGKILL tests prove); on power loss the newest commits may roll back, never
   * leaving a torn ledger. FULL also fsyncs each commit (about 1.4 ms here) for
   * power-loss durability at roughly a tenth of the throughput; set it with
   * FLOWISE_BILLING_SQLITE_SYNC=FULL.
   */
  readonly synchronous?: 'FULL' | 'NORMAL';
  /**
   * Who copies the WAL into the database file. `inline` (default): SQLite's
   * automatic checkpoint, inside the commit that crosses 16,000 pages (a
   * 20–35 ms stall of that operation and of the event loop). `background`: a
   * worker thread (./checkpointer.ts), no stalls and more throughput for a
   * slightly higher p99. Default from FLOWISE_BILLING_SQLITE_CHECKPOINT.
   */
  readonly checkpoint?: SqliteCheckpoint;
  /** How long a writer waits for another process's write lock. */
  readonly busyTimeoutMs?: number;
  /**
   * Which driver to use. `auto` (default): better-sqlite3 when it loads in this
   * Node (it is a native module built for one Node ABI), else the built-in
   * `node:sqlite` (Node >= 22.5). `FLOWISE_BILLING_SQLITE_DRIVER` sets it too.
   */
  readonly driver?: SqliteDriverName | 'auto';
}

export type SqliteDriverName = 'better-sqlite3' | 'node:sqlite';

/** The few operations the dialect needs from a driver; both drivers read integers as bigint. */
interface SqliteStatement {
  all(...params: SqlValue[]): unknown[];
  run(...params: SqlValue[]): { changes: number | bigint };
  /** better-sqlite3: whether the statement returns rows; `raw` makes them arrays, `columns` names them. */
  readonly reader?: boolean;
  raw?(on: boolean): SqliteStatement;
  columns?(): Array<{ name: string }>;
}

/**
 * A row builder for one statement's columns: an object literal with the
 * columns as fixed keys, so every row of the statement gets its hidden class
 * from compiled code. better-sqlite3 builds each row key by key through the
 * V8 API, a shape transition per column, which was about a tenth of a lone
 * caller's instructions. The keys are the statement's own column names,
 * quoted as JSON; a repeated name keeps its last value, as in the driver's rows.
 */
function rowBuilder(names: readonly string[]): (values: unknown[]) => Row {
  // eslint-disable-next-line @typescript-eslint/no-implied-eval
  return new Function('v', `return { ${names.map((n, i) => `${JSON.stringify(n)}: v[${i}]`).join(', ')} };`) as (values: unknown[]) => Row;
}

/** A prepared statement and, for one read as arrays, how to turn an array into a row. */
interface Prepared {
  readonly stmt: SqliteStatement;
  readonly row: ((values: unknown[]) => Row) | null;
}
interface SqliteDb {
  prepare(sql: string): SqliteStatement;
  exec(sql: string): void;
  close(): void;
}

interface BetterSqliteModule {
  new (file: string, opts: { readonly: boolean; fileMustExist: boolean }): {
    prepare(sql: string): SqliteStatement;
    exec(sql: string): void;
    pragma(sql: string): unknown;
    defaultSafeIntegers(on: boolean): void;
    close(): void;
  };
}
interface NodeSqliteModule {
  DatabaseSync: new (
    file: string,
    opts?: { readOnly?: boolean; open?: boolean },
  ) => { prepare(sql: string): SqliteStatement & { setReadBigInts(on: boolean): void }; exec(sql: string): void; close(): void };
}

let betterSqlite: BetterSqliteModule | null | undefined;
let betterSqlitePath: string | undefined;
/** better-sqlite3 if its native addon loads in this process (it loads lazily, so a probe database is opened once). */
function loadBetterSqlite(): BetterSqliteModule | null {
  if (betterSqlite !== undefined) return betterSqlite;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require('better-sqlite3') as BetterSqliteModule;
    new mod(':memory:', { readonly: false, fileMustExist: false }).close();
    betterSqlite = mod;
    betterSqlitePath = require.resolve('better-sqlite3');
  } catch {
    betterSqlite = null;
  }
  return betterSqlite;
}

function loadNodeSqlite(): NodeSqliteModule | null {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('node:sqlite') as NodeSqliteModule;
  } catch {
    return null;
  }
}

/** The driver `sqliteDialect` would use with these options in this process. */
export function sqliteDriver(choice: SqliteOptions['driver'] = (process.env.FLOWISE_BILLING_SQLITE_DRIVER as SqliteDriverName | undefined) ?? 'auto'): SqliteDriverName {
  if (choice === 'better-sqlite3' || (choice === 'auto' && loadBetterSqlite())) {
    if (!loadBetterSqlite()) throw new Error('better-sqlite3 cannot be loaded in this Node.js (its native addon is built for another version)');
    return 'better-sqlite3';
  }
  if (!loadNodeSqlite()) {
    throw new Error(`No SQLite driver: better-sqlite3 does not load in Node ${process.versions.node} and node:sqlite needs Node >= 22.5`);
  }
  return 'node:sqlite';
}

function pragmas(opts: SqliteOptions, readonly: boolean): string[] {
  const out = [`PRAGMA busy_timeout = ${opts.busyTimeoutMs ?? 15_000}`];
  if (!readonly) {
    // Only a new, empty file takes it (before WAL mode writes the header); an existing ledger keeps its size.
    out.push(`PRAGMA page_size = ${PAGE_SIZE}`);
    out.push('PRAGMA journal_mode = WAL');
    out.push(`PRAGMA synchronous = ${opts.synchronous ?? (process.env.FLOWISE_BILLING_SQLITE_SYNC === 'FULL' ? 'FULL' : 'NORMAL')}`);
    out.push('PRAGMA foreign_keys = ON');
    out.push(`PRAGMA wal_autocheckpoint = ${WAL_AUTOCHECKPOINT_PAGES}`);
    // A batch's multi-row upserts need statement journals, and with temp files on disk (the driver's default)
    // SQLite created, wrote and unlinked a temporary file for them in every transaction. In memory they
    // are at most the pages one statement changes. (Migrations go back to files: see migrationTransaction.)
    out.push('PRAGMA temp_store = MEMORY');
  }
  return out;
}

function openDb(driver: SqliteDriverName, file: string, opts: SqliteOptions, readonly: boolean): SqliteDb {
  if (driver === 'better-sqlite3') {
    const Database = loadBetterSqlite()!;
    const db = new Database(file, { readonly, fileMustExist: readonly });
    db.defaultSafeIntegers(true);
    for (const p of pragmas(opts, readonly)) db.pragma(p.slice('PRAGMA '.length));
    return db;
  }
  const { DatabaseSync } = loadNodeSqlite()!;
  if (readonly && !fs.existsSync(file)) throw new Error(`SQLite file ${file} does not exist`);
  const db = new DatabaseSync(file, { readOnly: readonly });
  for (const p of pragmas(opts, readonly)) db.exec(p);
  return {
    prepare(sql) {
      const stmt = db.prepare(sql);
      // Same as better-sqlite3's defaultSafeIntegers: every INTEGER column reads as bigint.
      stmt.setReadBigInts(true);
      return stmt;
    },
    exec: (sql) => db.exec(sql),
    close: () => db.close(),
  };
}

/** better-sqlite3 reports `code: 'SQLITE_CONSTRAINT_PRIMARYKEY'`; node:sqlite reports the extended result code in `errcode`. */
const SQLITE_CONSTRAINT_PRIMARYKEY = 1555;
const SQLITE_CONSTRAINT_UNIQUE = 2067;
function isUniqueViolation(e: unknown): boolean {
  const err = e as { code?: unknown; errcode?: unknown } | null;
  if (/^SQLITE_CONSTRAINT_(PRIMARYKEY|UNIQUE)$/.test(String(err?.code))) return true;
  return err?.errcode === SQLITE_CONSTRAINT_PRIMARYKEY || err?.errcode === SQLITE_CONSTRAINT_UNIQUE;
}

class SqliteConnection implements SyncSqlConnection {
  private readonly statements = new Map<string, Prepared>();
  constructor(readonly db: SqliteDb) {}

  private prepare(sql: string): Prepared {
    let p = this.statements.get(sql);
    if (!p) {
      const stmt = this.db.prepare(sql);
      // Only for statements that name their columns: under `*` a table rebuilt by another process's newer
      // schema step could change the columns' order behind the cached names (SQLite re-prepares silently).
      const rawRows = stmt.reader === true && stmt.raw !== undefined && stmt.columns !== undefined && !sql.includes('*');
      const names = rawRows ? stmt.columns!().map((c) => c.name) : [];
      // A column named __proto__ would set the literal's prototype instead of a key.
      p = rawRows && !names.includes('__proto__') ? { stmt: stmt.raw!(true), row: rowBuilder(names) } : { stmt, row: null };
      // Multi-row inserts vary in shape; keep the cache from growing without bound.
      if (this.statements.size > 500) this.statements.clear();
      this.statements.set(sql, p);
    }
    return p;
  }

  /** A parameterless statement (BEGIN, COMMIT), prepared once instead of parsed on every call like `db.exec`. */
  exec(sql: string): void {
    this.prepare(sql).stmt.run();
  }

  async query<T extends Row = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.queryNow<T>(sql, params);
  }

  queryNow<T extends Row = Row>(sql: string, params: readonly SqlValue[] = []): T[] {
    const { stmt, row } = this.prepare(sql);
    const rows = stmt.all(...params);
    if (row === null) return rows as T[];
    for (let i = 0; i < rows.length; i++) rows[i] = row(rows[i] as unknown[]);
    return rows as T[];
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    return this.runNow(sql, params);
  }

  runNow(sql: string, params: readonly SqlValue[]): number {
    return Number(this.prepare(sql).stmt.run(...params).changes);
  }
}

const MAX_PARAMS = 32_000;

const isThenable = <T>(v: Promise<T> | T): v is Promise<T> => typeof (v as { then?: unknown } | null)?.then === 'function';

/** SQLite: one writer connection (the file allows one writer at a time anyway) and a separate reader. */
export function sqliteDialect(opts: SqliteOptions): Dialect {
  const memory = opts.path === ':memory:';
  // Checked before anything opens: a bad FLOWISE_BILLING_SQLITE_CHECKPOINT leaves nothing behind.
  const background = !memory && sqliteCheckpointMode(opts.checkpoint) === 'background';
  if (!memory) fs.mkdirSync(path.dirname(path.resolve(opts.path)), { recursive: true });
  const driver = sqliteDriver(opts.driver ?? (process.env.FLOWISE_BILLING_SQLITE_DRIVER as SqliteDriverName | undefined) ?? 'auto');
  const writerDb = openDb(driver, opts.path, opts, false);
  const writer = new SqliteConnection(writerDb);
  // An in-memory database is private to its connection, so reads share the writer.
  const readerDb = memory ? undefined : openDb(driver, opts.path, opts, true);
  const reader = readerDb ? new SqliteConnection(readerDb) : writer;
  const mutex = new Mutex();
  const checkpointer: Checkpointer | undefined = background
    ? sqliteCheckpointer({
        file: path.resolve(opts.path),
        driver,
        driverPath: betterSqlitePath,
        setWriterAutocheckpoint: (pages) => writerDb.exec(`PRAGMA wal_autocheckpoint = ${pages}`),
        writerPages: WAL_AUTOCHECKPOINT_PAGES,
        backstopPages: BACKSTOP_PAGES,
      })
    : undefined;
  const rollback = () => {
    // SQLite may already have rolled back (e.g. SQLITE_FULL); ROLLBACK then fails harmlessly.
    try {
      writer.exec('ROLLBACK');
    } catch {
      // no transaction left to roll back
    }
  };
  /**
   * A `fn` that answers at once (a ledger batch on the synchronous connection) commits at once;
   * one that returns a promise commits when it resolves. Either rolls back when it fails.
   */
  const inTransaction = <T>(begin: string, fn: (c: SqlConnection) => Promise<T> | T): Promise<T> | T => {
    writer.exec(begin);
    let result: Promise<T> | T;
    try {
      result = fn(writer);
    } catch (e) {
      rollback();
      throw e;
    }
    if (!isThenable(result)) return commit(result);
    return result.then(commit, (e: unknown) => {
      rollback();
      throw e;
    });
  };
  const commit = <T>(value: T): T => {
    try {
      writer.exec('COMMIT');
    } catch (e) {
      rollback();
      throw e;
    }
    checkpointer?.committed();
    return value;
  };
  const transaction = <T>(begin: string, fn: (c: SqlConnection) => Promise<T> | T) => mutex.run(() => inTransaction(begin, fn));
  /** A schema step may copy or index a whole table: its temporary data goes to files, not memory. */
  const withTempFiles = <T>(begin: string, fn: (c: SqlConnection) => Promise<T>) =>
    mutex.run(async () => {
      writerDb.exec('PRAGMA temp_store = DEFAULT');
      try {
        return await inTransaction(begin, fn);
      } finally {
        writerDb.exec('PRAGMA temp_store = MEMORY');
      }
    });

  return {
    name: 'sqlite',
    location: memory ? ':memory:' : path.resolve(opts.path),
    forUpdate: '',
    serialPrimaryKey: 'INTEGER PRIMARY KEY AUTOINCREMENT',
    withoutRowid: ' WITHOUT ROWID',
    explicitSeq: true,
    maxParams: MAX_PARAMS,
    // IMMEDIATE takes the write lock up front, so two processes never both read then race to write.
    writeTransaction: (fn) => transaction('BEGIN IMMEDIATE', fn),
    migrationTransaction: (fn) => withTempFiles('BEGIN EXCLUSIVE', fn),
    read: (fn) => (memory ? mutex.run(() => fn(reader)) : fn(reader)),
    isRetryableConflict: isUniqueViolation,
    backgroundCheckpoints: () => checkpointer?.runs ?? 0,
    async close() {
      await mutex.run(async () => {
        // The thread's connection first: the writer, closing last, checkpoints and removes the WAL.
        await checkpointer?.close();
        readerDb?.close();
        writerDb.close();
      });
    },
  };
}

/**
 * Whether `file` is an SQLite database with `table`, asked over a read-only
 * connection: unlike opening the dialect (which sets WAL mode), this changes
 * nothing in a file that turns out not to be a ledger. A file that is not a
 * database answers false.
 */
export function sqliteHasTable(file: string, table: string): boolean {
  let db: SqliteDb;
  try {
    db = openDb(sqliteDriver(), file, { path: file }, true);
  } catch (e) {
    if (!fs.existsSync(file)) return false;
    throw e;
  }
  try {
    return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").all(table).length > 0;
  } catch (e) {
    if (/not a database|file is encrypted/i.test(String((e as Error).message))) return false;
    throw e;
  } finally {
    db.close();
  }
}
