import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { openLedger, type OpenLedgerOptions } from '../../src/ledger/open';
import type { SqlLedger } from '../../src/ledger/sql-ledger';

export const PG_BASE_URL = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';

export interface Backend {
  readonly name: 'sqlite' | 'postgres';
  /** A fresh, empty ledger location (SQLite file or Postgres schema URL). */
  freshTarget(): Promise<string>;
  open(target: string, opts?: OpenLedgerOptions): Promise<SqlLedger>;
}

/** Set by the global setup for the whole run; a file run alone gets its own. */
const RUN = (process.env.FB_TEST_RUN ??= randomUUID().replace(/-/g, '').slice(0, 8));

const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-test-'));

const all: Backend[] = [
  {
    name: 'sqlite',
    async freshTarget() {
      return path.join(tmpRoot, `${randomUUID()}.sqlite`);
    },
    open: (target, opts) => openLedger(target, opts),
  },
  {
    name: 'postgres',
    async freshTarget() {
      // Prefixed with this run's id, so the teardown drops only what this run made.
      const schema = `t_${RUN}_${randomUUID().replace(/-/g, '').slice(0, 16)}`;
      return `${PG_BASE_URL}?schema=${schema}`;
    },
    open: (target, opts) => openLedger(target, opts),
  },
];

/** Every storage test loops over these; FB_BACKENDS=sqlite (or postgres) narrows the run. */
export const BACKENDS: Backend[] = all.filter((b) => {
  const only = process.env.FB_BACKENDS?.split(',').map((s) => s.trim());
  return !only || only.includes(b.name);
});

/** Drops the test schemas a run left behind (called from global teardown). */
export async function dropTestSchemas(run: string = RUN): Promise<void> {
  const c = new Client({ connectionString: PG_BASE_URL });
  await c.connect();
  try {
    const { rows } = await c.query('SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)', [`t_${run}_`]);
    for (const r of rows) await c.query(`DROP SCHEMA IF EXISTS ${r.nspname} CASCADE`);
  } finally {
    await c.end();
  }
}
