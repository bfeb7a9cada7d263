/*
 * FROZEN: src/webhooks/schema.ts exactly as released up to commit a09690a
 * (`git show a09690a:src/webhooks/schema.ts`), with its own migration runner.
 * See ledger-migrations-v4.ts. Never edit it; only the import path differs.
 */
import type { Dialect, SqlConnection } from '../../../src/ledger/dialect';

/**
 * Tables of the operator surfaces (outbound webhooks here, API keys and HTTP
 * idempotency in src/server), versioned apart from the ledger's own
 * migrations so neither side edits the other's history. Same rules: append,
 * never edit; BIGINT epoch milliseconds; SQL both SQLite and PostgreSQL run.
 */
export interface ModuleMigration {
  readonly version: number;
  readonly name: string;
  statements(d: Dialect): string[];
}

/** Applies `list` once each, recorded in its own version table, under the dialect's cross-process migration lock. */
export async function applyMigrations(d: Dialect, versionTable: string, list: readonly ModuleMigration[], now: number = Date.now()): Promise<number[]> {
  return d.migrationTransaction(async (c: SqlConnection) => {
    await c.run(`CREATE TABLE IF NOT EXISTS ${versionTable} (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`);
    const done = new Set((await c.query<{ version: unknown }>(`SELECT version FROM ${versionTable}`)).map((r) => Number(r.version)));
    const applied: number[] = [];
    for (const m of list) {
      if (done.has(m.version)) continue;
      for (const sql of m.statements(d)) await c.run(sql);
      await c.run(`INSERT INTO ${versionTable} (version, name, applied_at) VALUES (?, ?, ?)`, [m.version, m.name, now]);
      applied.push(m.version);
    }
    return applied;
  });
}

export const WEBHOOK_MIGRATIONS: readonly ModuleMigration[] = [
  {
    version: 1,
    name: 'outbound webhooks: endpoints, events, deliveries',
    statements: (d) => [
      `CREATE TABLE billing_webhook_endpoints (
        id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        events TEXT NOT NULL,
        description TEXT,
        enabled INTEGER NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
      // One row per event, written in the transaction of its cause; id is derived from the cause, so a replay inserts nothing.
      `CREATE TABLE billing_webhook_events (
        seq ${d.serialPrimaryKey},
        id TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        customer_id TEXT,
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      'CREATE INDEX billing_webhook_events_customer ON billing_webhook_events (customer_id, seq)',
      // The outbox proper: one row per (event, endpoint) that subscribed when the event happened.
      `CREATE TABLE billing_webhook_deliveries (
        event_id TEXT NOT NULL,
        endpoint_id TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        last_error TEXT,
        last_status INTEGER,
        delivered_at BIGINT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (event_id, endpoint_id)
      )`,
      'CREATE INDEX billing_webhook_deliveries_due ON billing_webhook_deliveries (status, next_attempt_at)',
      // Low-balance thresholds per customer (a row with customer_id '*' is the default).
      `CREATE TABLE billing_webhook_balance_thresholds (
        customer_id TEXT PRIMARY KEY,
        threshold BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
      )`,
    ],
  },
];

export function migrateWebhooks(d: Dialect, now?: number): Promise<number[]> {
  return applyMigrations(d, 'billing_webhooks_schema_migrations', WEBHOOK_MIGRATIONS, now);
}
