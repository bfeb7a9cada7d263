import type { Dialect } from '../ledger/dialect';
import { applySchemas, type SchemaOwner } from '../ledger/schema-runner';
import { WEBHOOK_SCHEMA } from '../webhooks/schema';

/** serve's tables: API keys and HTTP idempotency, in their own version table. */
export const SERVER_SCHEMA: SchemaOwner = {
  owner: 'server',
  versionTable: 'billing_server_schema_migrations',
  steps: [
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
  ],
};

/** Migrates the serve tables and the webhook tables (the ledger migrates its own on open). */
export async function migrateServer(d: Dialect): Promise<void> {
  await applySchemas(d, [WEBHOOK_SCHEMA, SERVER_SCHEMA]);
}
