import type { SchemaOwner } from '../ledger/schema-runner';

/**
 * Quota's tables: plans, subscriptions, conversations and sessions, usage,
 * alerts, invoices. Created when a billing database is opened (see
 * src/ledger/migrations.ts, SCHEMAS_ON_OPEN), recorded in quota's own version
 * table. Append a step to change them; never edit a released one.
 */
export const QUOTA_SCHEMA: SchemaOwner = {
  owner: 'quota',
  versionTable: 'billing_quota_schema_migrations',
  steps: [
    {
      version: 1,
      name: 'plans, subscriptions, sessions, usage, alerts, invoices',
      // Databases from before quota had its own version table recorded these tables as the ledger's version 3.
      recordedAs: { table: 'billing_schema_migrations', version: 3, name: 'plans, subscriptions, sessions, usage, alerts, invoices' },
      statements: () => [
        `CREATE TABLE billing_plans (
          id TEXT PRIMARY KEY,
          document TEXT NOT NULL,
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        )`,
        `CREATE TABLE billing_subscriptions (
          customer_id TEXT PRIMARY KEY REFERENCES billing_customers(id),
          plan_id TEXT NOT NULL REFERENCES billing_plans(id),
          status TEXT NOT NULL,
          anchor_day INTEGER NOT NULL,
          period_start BIGINT NOT NULL,
          period_end BIGINT NOT NULL,
          sessions_used INTEGER NOT NULL,
          pending_plan_id TEXT,
          cancel_at_period_end INTEGER NOT NULL,
          created_at BIGINT NOT NULL,
          updated_at BIGINT NOT NULL
        )`,
        `CREATE TABLE billing_conversations (
          customer_id TEXT NOT NULL,
          conversation_id TEXT NOT NULL,
          session_id TEXT NOT NULL,
          started_at BIGINT NOT NULL,
          last_activity_at BIGINT NOT NULL,
          PRIMARY KEY (customer_id, conversation_id)
        )`,
        `CREATE TABLE billing_sessions (
          id TEXT PRIMARY KEY,
          customer_id TEXT NOT NULL,
          conversation_id TEXT NOT NULL,
          started_at BIGINT NOT NULL,
          period_start BIGINT NOT NULL
        )`,
        'CREATE INDEX billing_sessions_period ON billing_sessions (customer_id, period_start)',
        `CREATE TABLE billing_usage (
          customer_id TEXT NOT NULL,
          metric TEXT NOT NULL,
          quantity TEXT NOT NULL,
          period_start BIGINT NOT NULL,
          idempotency_key TEXT NOT NULL UNIQUE,
          recorded_at BIGINT NOT NULL
        )`,
        'CREATE INDEX billing_usage_period ON billing_usage (customer_id, period_start)',
        `CREATE TABLE billing_alerts (
          customer_id TEXT NOT NULL,
          period_start BIGINT NOT NULL,
          kind TEXT NOT NULL,
          threshold INTEGER NOT NULL,
          value TEXT NOT NULL,
          fired_at BIGINT NOT NULL,
          PRIMARY KEY (customer_id, period_start, kind, threshold)
        )`,
        `CREATE TABLE billing_invoices (
          id TEXT PRIMARY KEY,
          customer_id TEXT NOT NULL,
          period_start BIGINT NOT NULL,
          period_end BIGINT NOT NULL,
          plan_id TEXT NOT NULL,
          total BIGINT NOT NULL,
          document TEXT NOT NULL,
          closed_at BIGINT NOT NULL,
          UNIQUE (customer_id, period_start)
        )`,
      ],
    },
  ],
};
