import type { Dialect } from '../ledger/dialect';
import { applySchemas, type SchemaOwner } from '../ledger/schema-runner';

/**
 * Tables of the outbound webhooks: endpoints, events, deliveries, balance
 * thresholds, versioned in their own table through the one schema runner
 * (src/ledger/schema-runner.ts) so neither side edits the other's history.
 * Append a step to change them; never edit a released one.
 */
export const WEBHOOK_SCHEMA: SchemaOwner = {
  owner: 'webhooks',
  versionTable: 'billing_webhooks_schema_migrations',
  steps: [
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
    {
      version: 2,
      name: 'outbound webhooks: older signing secrets during a rotation',
      // Nullable columns only: a release that knows version 1 alone reads and writes these rows unchanged
      // (it refuses the database as SCHEMA_TOO_NEW before that, through the version table).
      statements: () => [
        // JSON [{"secret","expiresAt"}]: secrets replaced by a rotation that still sign deliveries until expiresAt.
        'ALTER TABLE billing_webhook_endpoints ADD COLUMN old_secrets TEXT',
        // The soonest expiresAt among them (NULL: none): a delivery pass finds the rows with a secret to drop without parsing each row's JSON.
        'ALTER TABLE billing_webhook_endpoints ADD COLUMN old_secrets_next_expiry BIGINT',
      ],
    },
    {
      version: 3,
      name: 'outbound webhooks: due deliveries by endpoint',
      // The deliverer reads each endpoint's due deliveries on their own (deliver.ts: one endpoint's backlog must not
      // hide or delay another's); without this index each read would walk every due delivery of every endpoint.
      statements: () => ['CREATE INDEX billing_webhook_deliveries_endpoint_due ON billing_webhook_deliveries (endpoint_id, status, next_attempt_at)'],
    },
  ],
};

/** Creates or updates the webhook tables; returns the versions applied. */
export async function migrateWebhooks(d: Dialect, now?: number): Promise<number[]> {
  const [r] = await applySchemas(d, [WEBHOOK_SCHEMA], now);
  return r!.applied;
}
