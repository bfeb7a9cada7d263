import type { Dialect } from '../ledger/dialect';
import { applyMigrations, migrateWebhooks, type ModuleMigration } from '../webhooks/schema';

const SERVER_MIGRATIONS: readonly ModuleMigration[] = [
  {
    version: 1,
    name: 'api keys and HTTP idempotency',
    statements: () => [
      // Only the SHA-256 of the secret part is kept; the full key is shown once at creation.
      `CREATE TABLE billing_api_keys (
        id TEXT PRIMARY KEY,
        name TEXT,
        scope TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at BIGINT
      )`,
      // A mutation's response, by its Idempotency-Key: a replay gets it back, a different request with the key is a conflict.
      `CREATE TABLE billing_api_idempotency (
        key TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
    ],
  },
];

/** Migrates the serve tables and the webhook tables (the ledger migrates its own on open). */
export async function migrateServer(d: Dialect): Promise<void> {
  await migrateWebhooks(d);
  await applyMigrations(d, 'billing_server_schema_migrations', SERVER_MIGRATIONS);
}
