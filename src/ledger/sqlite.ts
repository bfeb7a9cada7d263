import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import type { Dialect, Row, SqlConnection, SqlValue } from './dialect';
import { Mutex } from './mutex';

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
  /** How long a writer waits for another process's write lock. */
  readonly busyTimeoutMs?: number;
}

class SqliteConnection implements SqlConnection {
  private readonly statements = new Map<string, Database.Statement>();
  constructor(readonly db: Database.Database) {}

  private prepare(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      // Multi-row inserts vary in shape; keep the cache from growing without bound.
      if (this.statements.size > 500) this.statements.clear();
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  async query<T extends Row = Row>(sql: string, params: readonly SqlValue[] = []): Promise<T[]> {
    return this.prepare(sql).all(...params) as T[];
  }

  async run(sql: string, params: readonly SqlValue[] = []): Promise<number> {
    return this.prepare(sql).run(...params).changes;
  }
}

function open(file: string, opts: SqliteOptions, readonly: boolean): Database.Database {
  const db = new Database(file, { readonly, fileMustExist: readonly });
  db.defaultSafeIntegers(true);
  db.pragma(`busy_timeout = ${opts.busyTimeoutMs ?? 15_000}`);
  if (!readonly) {
    db.pragma('journal_mode = WAL');
    db.pragma(`synchronous = ${opts.synchronous ?? (process.env.FLOWISE_BILLING_SQLITE_SYNC === 'FULL' ? 'FULL' : 'NORMAL')}`);
    db.pragma('foreign_keys = ON');
  }
  return db;
}

/** SQLite: one writer connection (the file allows one writer at a time anyway) and a separate reader. */
export function sqliteDialect(opts: SqliteOptions): Dialect {
  const memory = opts.path === ':memory:';
  if (!memory) fs.mkdirSync(path.dirname(path.resolve(opts.path)), { recursive: true });
  const writerDb = open(opts.path, opts, false);
  const writer = new SqliteConnection(writerDb);
  // An in-memory database is private to its connection, so reads share the writer.
  const readerDb = memory ? undefined : open(opts.path, opts, true);
  const reader = readerDb ? new SqliteConnection(readerDb) : writer;
  const mutex = new Mutex();

  const transaction = <T>(begin: string, fn: (c: SqlConnection) => Promise<T>) =>
    mutex.run(async () => {
      writerDb.exec(begin);
      try {
        const result = await fn(writer);
        writerDb.exec('COMMIT');
        return result;
      } catch (e) {
        if (writerDb.inTransaction) writerDb.exec('ROLLBACK');
        throw e;
      }
    });

  return {
    name: 'sqlite',
    location: memory ? ':memory:' : path.resolve(opts.path),
    forUpdate: '',
    serialPrimaryKey: 'INTEGER PRIMARY KEY AUTOINCREMENT',
    maxParams: 32_000,
    // IMMEDIATE takes the write lock up front, so two processes never both read then race to write.
    writeTransaction: (fn) => transaction('BEGIN IMMEDIATE', fn),
    migrationTransaction: (fn) => transaction('BEGIN EXCLUSIVE', fn),
    read: (fn) => (memory ? mutex.run(() => fn(reader)) : fn(reader)),
    isRetryableConflict: (e) => /^SQLITE_CONSTRAINT_(PRIMARYKEY|UNIQUE)$/.test(String((e as { code?: string })?.code)),
    async close() {
      await mutex.run(async () => {
        readerDb?.close();
        writerDb.close();
      });
    },
  };
}
