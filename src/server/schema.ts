import type { Dialect } from '../ledger/dialect';
import { applySchemas, type SchemaOwner } from '../ledger/schema-runner';
import { WEBHOOK_SCHEMA } from '../webhooks/schema';
import { SECRET_NOT_REPLAYED } from './idempotency';

/** A stored replay that still carries a webhook signing secret (only endpoint creation stored one). */
const HOLDS_SECRET = `body LIKE '%"secret":"whsec\\_%' ESCAPE '\\'`;
const NOTE = `'${SECRET_NOT_REPLAYED.replace(/'/g, "''")}'`;

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
    {
      version: 2,
      name: 'no webhook signing secrets in stored replays',
      // Replays are now stored without the secret (idempotency.ts, withoutSecret); this takes it out of the ones
      // stored before, the same way: secret null and the note. A stored answer (status > 0) is JSON.stringify
      // output; a pending claim's body is its token, not JSON, so CASE keeps the JSON functions off it (a WHERE's
      // AND is not evaluated in a guaranteed order on PostgreSQL).
      statements: (d) => [
        d.name === 'sqlite'
          ? `UPDATE billing_api_idempotency SET body = json_set(body, '$.secret', NULL, '$.secretNote', ${NOTE}) WHERE CASE WHEN status > 0 AND ${HOLDS_SECRET} THEN json_type(body) = 'object' ELSE 0 END`
          : `UPDATE billing_api_idempotency SET body = (body::jsonb || jsonb_build_object('secret', NULL::text, 'secretNote', ${NOTE}::text))::text WHERE CASE WHEN status > 0 AND ${HOLDS_SECRET} THEN jsonb_typeof(body::jsonb) = 'object' ELSE false END`,
      ],
    },
  ],
};

/** Migrates the serve tables and the webhook tables (the ledger migrates its own on open). */
export async function migrateServer(d: Dialect): Promise<void> {
  await applySchemas(d, [WEBHOOK_SCHEMA, SERVER_SCHEMA]);
}
