import { BillingError } from '../errors';
import type { Dialect, SqlConnection } from './dialect';

/**
 * The one schema runner. Every module that keeps tables in the billing
 * database (the ledger, quota, Stripe, outbound webhooks, serve) declares
 * its own steps in its own `schema.ts`; this applies them, once each and in
 * order, recorded in that owner's version table, under the dialect's
 * cross-process migration lock. Rules for steps: append, never edit a
 * released one; amounts BIGINT nano-USD, times BIGINT epoch milliseconds;
 * SQL both SQLite and PostgreSQL run.
 */
export interface SchemaStep {
  readonly version: number;
  readonly name: string;
  statements(d: Dialect): string[];
  /**
   * Where older releases, which kept one version list for every table,
   * recorded this step (quota's tables were the ledger's version 3, Stripe's
   * version 4). A database holding that record already has the tables: the
   * step is adopted (recorded here, nothing run). A database created now
   * gets that record too, so an older binary sharing it finds the versions
   * it expects and neither re-creates nor refuses anything.
   */
  readonly recordedAs?: { readonly table: string; readonly version: number; readonly name: string };
}

export interface SchemaOwner {
  /** Who owns the tables ('ledger', 'quota', 'stripe', …), for messages. */
  readonly owner: string;
  /** Where this owner's applied versions are recorded. */
  readonly versionTable: string;
  readonly steps: readonly SchemaStep[];
  /**
   * Versions this owner's table records for steps that now belong to other
   * owners (see `recordedAs`): known, so never "newer than supported", and
   * never reused.
   */
  readonly handedOver?: readonly number[];
}

/** What one run did for one owner: steps whose statements ran, and steps recognised as already there. */
export interface SchemaResult {
  readonly owner: string;
  readonly applied: number[];
  readonly adopted: number[];
}

const IDENTIFIER = /^[a-z_][a-z0-9_]*$/;

/** The newest version an owner knows: its last step, or a version it handed over. */
export function newestVersion(o: SchemaOwner): number {
  return Math.max(0, ...o.steps.map((s) => s.version), ...(o.handedOver ?? []));
}

async function versions(c: SqlConnection, table: string): Promise<Set<number>> {
  return new Set((await c.query<{ version: unknown }>(`SELECT version FROM ${table}`)).map((r) => Number(r.version)));
}

function record(c: SqlConnection, table: string, version: number, name: string, at: number): Promise<number> {
  return c.run(`INSERT INTO ${table} (version, name, applied_at) VALUES (?, ?, ?)`, [version, name, at]);
}

function tooNew(o: SchemaOwner, newest: number): BillingError {
  const supported = newestVersion(o);
  // A newer flowise-billing migrated this database; this one would misread or corrupt its tables.
  return new BillingError(
    'SCHEMA_TOO_NEW',
    `The ledger database has ${o.owner === 'ledger' ? '' : `${o.owner} `}schema version ${newest}, newer than the ${supported} this flowise-billing understands; upgrade flowise-billing (every process sharing the database) before using it`,
    { schemaVersion: newest, supportedVersion: supported },
  );
}

/**
 * Applies each owner's pending steps, owners in the order given (an owner
 * whose tables reference another's comes after it), all in one migration
 * transaction: safe to call from many processes at once, and a failure
 * leaves the database as it was. Refuses with SCHEMA_TOO_NEW, before
 * changing anything, when any owner's table records a version newer than
 * this code knows.
 */
export async function applySchemas(d: Dialect, owners: readonly SchemaOwner[], now: number = Date.now()): Promise<SchemaResult[]> {
  const tables = new Set(owners.map((o) => o.versionTable));
  for (const o of owners) {
    if (!IDENTIFIER.test(o.versionTable)) throw new Error(`schema owner ${o.owner}: bad version table name ${o.versionTable}`);
    for (const s of o.steps) {
      // A legacy record lives in another owner's version table of the same run, created below before any step runs.
      if (s.recordedAs && !tables.has(s.recordedAs.table)) throw new Error(`schema owner ${o.owner}: step ${s.version} is recorded in ${s.recordedAs.table}, which no owner of this run keeps`);
    }
  }
  return d.migrationTransaction(async (c) => {
    for (const table of tables) {
      await c.run(`CREATE TABLE IF NOT EXISTS ${table} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`);
    }
    const done = new Map<string, Set<number>>();
    for (const table of tables) done.set(table, await versions(c, table));
    for (const o of owners) {
      const newest = Math.max(0, ...done.get(o.versionTable)!);
      if (newest > newestVersion(o)) throw tooNew(o, newest);
    }
    const results: SchemaResult[] = [];
    for (const o of owners) {
      const mine = done.get(o.versionTable)!;
      const applied: number[] = [];
      const adopted: number[] = [];
      for (const s of o.steps) {
        if (mine.has(s.version)) continue;
        const legacy = s.recordedAs ? done.get(s.recordedAs.table)! : null;
        if (s.recordedAs && legacy!.has(s.recordedAs.version)) {
          adopted.push(s.version);
        } else {
          for (const sql of s.statements(d)) await c.run(sql);
          if (s.recordedAs) {
            await record(c, s.recordedAs.table, s.recordedAs.version, s.recordedAs.name, now);
            legacy!.add(s.recordedAs.version);
          }
          applied.push(s.version);
        }
        await record(c, o.versionTable, s.version, s.name, now);
        mine.add(s.version);
      }
      results.push({ owner: o.owner, applied, adopted });
    }
    return results;
  });
}
