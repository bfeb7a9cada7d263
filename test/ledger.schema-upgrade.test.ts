import { afterEach, describe, expect, it } from 'vitest';
import type { BillingError } from '../src/errors';
import type { Dialect, Row } from '../src/ledger/dialect';
import { LEDGER_SCHEMA, migrate, SCHEMA_VERSION } from '../src/ledger/migrations';
import { postgresDialect } from '../src/ledger/postgres';
import { applySchemas, newestVersion, type SchemaOwner } from '../src/ledger/schema-runner';
import { sqliteDialect } from '../src/ledger/sqlite';
import { parseUsd } from '../src/money';
import { insertPlan } from '../src/quota/plan-rows';
import { parsePlan } from '../src/quota/plans';
import { QUOTA_SCHEMA } from '../src/quota/schema';
import { QuotaService } from '../src/quota/service';
import { migrateServer } from '../src/server/schema';
import { STRIPE_SCHEMA } from '../src/stripe/schema';
import { stripeCustomerFor } from '../src/stripe/customers';
import { migrateWebhooks, WEBHOOK_SCHEMA } from '../src/webhooks/schema';
import { WebhookStore } from '../src/webhooks/store';
import { BACKENDS, type Backend } from './support/backends';
import { spawnWorker, startTogether } from './support/processes';
import { migrate as legacyMigrate, MIGRATIONS as LEGACY_MIGRATIONS } from './support/legacy/ledger-migrations-v4';
import { migrateWebhooks as legacyMigrateWebhooks } from './support/legacy/webhooks-schema-v1';

/**
 * Databases created before each owner had its own schema (every table in the
 * ledger's version list: quota as version 3, Stripe as 4) are built here with
 * the released migration code itself, frozen in test/support/legacy/.
 */

const NEW_VERSION_TABLES = ['billing_quota_schema_migrations', 'billing_stripe_schema_migrations'];
const T0 = Date.UTC(2026, 10, 1);

function dialectFor(backend: Backend, target: string): Dialect {
  return backend.name === 'postgres' ? postgresDialect({ url: target }) : sqliteDialect({ path: target });
}

/** Every table, column, index and constraint, as the database itself describes them (schema names normalised). */
async function shape(d: Dialect): Promise<Row[]> {
  return d.read(async (c) => {
    if (d.name === 'sqlite') {
      const rows = await c.query("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name");
      // SQLite keeps each statement's text as written; layout is not schema.
      return rows.map((r) => ({ ...r, sql: String(r.sql).replace(/\s+/g, ' ').replace(/\( /g, '(').replace(/ \)/g, ')') }));
    }
    const [{ s }] = (await c.query('SELECT current_schema() AS s')) as [{ s: string }];
    const norm = (rows: Row[]) => rows.map((r) => JSON.parse(JSON.stringify(r).split(`${s}.`).join('S.')) as Row);
    const columns = await c.query(
      `SELECT table_name, column_name, data_type, is_nullable, column_default, ordinal_position
         FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`,
    );
    const indexes = await c.query('SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname');
    const constraints = await c.query(
      `SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def
         FROM pg_constraint WHERE connamespace = current_schema()::regnamespace ORDER BY conname`,
    );
    return [...norm(columns), ...norm(indexes), ...norm(constraints)];
  });
}

const without = (rows: Row[], tables: string[]) => rows.filter((r) => !tables.some((t) => JSON.stringify(r).includes(t)));

async function versionRows(d: Dialect, table: string): Promise<Array<{ version: number; name: string; appliedAt: number }>> {
  const rows = await d.read((c) => c.query(`SELECT version, name, applied_at FROM ${table} ORDER BY version`));
  return rows.map((r) => ({ version: Number(r.version), name: String(r.name), appliedAt: Number(r.applied_at) }));
}

/** Rows written straight into the legacy tables, as an older flowise-billing would have left them. */
async function seedLegacy(d: Dialect): Promise<string> {
  await d.writeTransaction(async (c) => {
    await c.run(
      'INSERT INTO billing_customers (id, name, balance, held, created_at, updated_at, budget, budget_anchor_day, budget_period_start, budget_period_end, budget_spent) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, 0)',
      ['acme', 'Acme', parseUsd('5'), 0n, T0, T0],
    );
    await c.run(
      "INSERT INTO billing_entries (id, customer_id, type, amount, held_delta, balance_after, idempotency_key, actor, created_at) VALUES ('ent_legacy', 'acme', 'topup', ?, 0, ?, 'legacy-topup', 'legacy', ?)",
      [parseUsd('5'), parseUsd('5'), T0],
    );
    await insertPlan(c, parsePlan({ id: 'legacy-plan', name: 'Legacy', basePriceUsd: '9', sessionsIncluded: 7, managedModels: true }), T0);
    await c.run("INSERT INTO billing_stripe_customers (customer_id, stripe_customer_id, created_at) VALUES ('acme', 'cus_legacy', ?)", [T0]);
  });
  const endpoint = await new WebhookStore(d, () => T0).createEndpoint({ url: 'https://hooks.example.test/billing', events: ['*'] });
  return endpoint.id;
}

/** The last version of the single list, and what an upgrade from it runs: the steps appended since, nothing else. */
const LEGACY_VERSION = LEGACY_MIGRATIONS.at(-1)!.version;
const newer = (o: SchemaOwner, since: number) => o.steps.filter((st) => st.version > since).map((st) => st.version);
const UPGRADE = [
  { owner: 'ledger', applied: newer(LEDGER_SCHEMA, LEGACY_VERSION), adopted: [] },
  { owner: 'quota', applied: newer(QUOTA_SCHEMA, 1), adopted: [1] },
  { owner: 'stripe', applied: newer(STRIPE_SCHEMA, 1), adopted: [1] },
];
const NOTHING_NEWER = UPGRADE.every((r) => r.applied.length === 0) && newer(WEBHOOK_SCHEMA, 1).length === 0;

/** An older flowise-billing opening the database: accepted unchanged, unless a later ledger step made it refuse cleanly. */
async function expectOlderBinary(d: Dialect): Promise<void> {
  const before = await shape(d);
  if (SCHEMA_VERSION === LEGACY_VERSION) {
    expect(await legacyMigrate(d)).toEqual([]);
  } else {
    expect(((await legacyMigrate(d).catch((e: unknown) => e)) as BillingError).code).toBe('SCHEMA_TOO_NEW');
  }
  expect(await legacyMigrateWebhooks(d)).toEqual([]);
  expect(await shape(d)).toEqual(before);
}

const opened: Dialect[] = [];
afterEach(async () => {
  while (opened.length) await opened.pop()!.close().catch(() => undefined);
});
function track(d: Dialect): Dialect {
  opened.push(d);
  return d;
}

describe.each(BACKENDS)('schema upgrade from the single version list ($name)', (backend) => {
  it('a database created by the previous release upgrades as a no-op, and its data survives', async () => {
    const target = await backend.freshTarget();
    const old = track(dialectFor(backend, target));
    expect(await legacyMigrate(old, () => T0)).toEqual([1, 2, 3, 4]);
    expect(await legacyMigrateWebhooks(old, T0)).toEqual([1]);
    const endpointId = await seedLegacy(old);
    const shapeBefore = await shape(old);
    const ledgerVersionsBefore = await versionRows(old, 'billing_schema_migrations');
    await old.close();

    const d = track(dialectFor(backend, target));
    // Quota's and Stripe's first steps are recognised by the versions the ledger's list already holds: nothing is
    // re-created, and only steps appended since then run.
    expect(await migrate(d, () => T0 + 1)).toEqual(UPGRADE);
    expect(await migrateWebhooks(d, T0 + 1)).toEqual(newer(WEBHOOK_SCHEMA, 1));
    // With no step appended since, not one table, column, index or constraint changed: only the two version tables were added.
    if (NOTHING_NEWER) expect(without(await shape(d), NEW_VERSION_TABLES)).toEqual(shapeBefore);
    expect((await versionRows(d, 'billing_schema_migrations')).slice(0, ledgerVersionsBefore.length)).toEqual(ledgerVersionsBefore);
    expect(await versionRows(d, 'billing_quota_schema_migrations')).toEqual(
      [1, ...newer(QUOTA_SCHEMA, 1)].map((version) => ({ version, name: QUOTA_SCHEMA.steps.find((st) => st.version === version)!.name, appliedAt: T0 + 1 })),
    );
    expect((await versionRows(d, 'billing_stripe_schema_migrations')).map((r) => r.version)).toEqual([1, ...newer(STRIPE_SCHEMA, 1)]);
    // A second upgrade finds nothing to do.
    expect((await migrate(d)).every((r) => r.applied.length === 0 && r.adopted.length === 0)).toBe(true);
    await d.close();
    opened.pop();

    // The data the older release wrote reads back, and every owner's tables take new writes.
    const ledger = await backend.open(target);
    try {
      expect((await ledger.balance('acme')).balance).toBe(parseUsd('5'));
      await ledger.topUp({ customerId: 'acme', amount: parseUsd('1'), idempotencyKey: 'after-upgrade' });
      expect((await ledger.balance('acme')).available).toBe(parseUsd('6'));
      expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
      const quota = new QuotaService(ledger);
      expect((await quota.getPlan('legacy-plan')).sessionsIncluded).toBe(7);
      expect((await quota.subscribe({ customerId: 'acme', planId: 'legacy-plan' })).change).toBe('new');
      expect(await stripeCustomerFor(ledger, 'acme')).toBe('cus_legacy');
      expect((await new WebhookStore(ledger.dialect).listEndpoints()).map((e) => e.id)).toEqual([endpointId]);
    } finally {
      await ledger.close();
    }

    // An older binary still sharing the database finds every version it knows and changes nothing.
    await expectOlderBinary(track(dialectFor(backend, target)));
  });

  it('a database created now is the same as one the previous release created and this one upgraded, and keeps the ledger versions an older binary expects', async () => {
    const legacy = track(dialectFor(backend, await backend.freshTarget()));
    await legacyMigrate(legacy, () => T0);
    await legacyMigrateWebhooks(legacy, T0);
    const legacyShape = await shape(legacy);
    await migrate(legacy, () => T0);
    await migrateWebhooks(legacy, T0);

    const d = track(dialectFor(backend, await backend.freshTarget()));
    expect(await migrate(d, () => T0)).toEqual([
      { owner: 'ledger', applied: LEDGER_SCHEMA.steps.map((st) => st.version), adopted: [] },
      { owner: 'quota', applied: QUOTA_SCHEMA.steps.map((st) => st.version), adopted: [] },
      { owner: 'stripe', applied: STRIPE_SCHEMA.steps.map((st) => st.version), adopted: [] },
    ]);
    expect(await migrateWebhooks(d, T0)).toEqual(WEBHOOK_SCHEMA.steps.map((st) => st.version));
    // Created fresh or upgraded from the single version list: the same tables, and the same versions in every owner's table.
    expect(await shape(d)).toEqual(await shape(legacy));
    // Step 7 (entry-ids.ts): no unique index on the entries' ids, created or upgraded.
    const entriesShape = JSON.stringify((await shape(d)).filter((r) => JSON.stringify(r).includes('billing_entries')));
    expect(entriesShape).toContain('billing_entries_key');
    expect(entriesShape).not.toMatch(/billing_entries_id_key|\bid TEXT NOT NULL UNIQUE/);
    for (const table of ['billing_schema_migrations', ...NEW_VERSION_TABLES, WEBHOOK_SCHEMA.versionTable]) {
      expect(await versionRows(d, table), table).toEqual(await versionRows(legacy, table));
    }
    if (NOTHING_NEWER) expect(without(await shape(d), NEW_VERSION_TABLES)).toEqual(legacyShape);
    // The ledger's list still names quota's and Stripe's first steps as 3 and 4, as an older binary expects.
    expect((await versionRows(d, 'billing_schema_migrations')).slice(0, LEGACY_MIGRATIONS.length)).toEqual(
      LEGACY_MIGRATIONS.map((m) => ({ version: m.version, name: m.name, appliedAt: T0 })),
    );
    await expectOlderBinary(d);
  });

  it('processes upgrading one legacy database at once adopt each step exactly once', async () => {
    const target = await backend.freshTarget();
    const old = track(dialectFor(backend, target));
    await legacyMigrate(old, () => T0);
    await old.close();
    opened.pop();
    // Separate processes: one process's synchronous SQLite busy-wait would stall its own lock holder.
    const workers = [1, 2, 3, 4].map(() => spawnWorker('open-worker.cjs', [target]));
    await startTogether(workers);
    expect(await Promise.all(workers.map((w) => w.result))).toEqual(['opened', 'opened', 'opened', 'opened']);
    const d = track(dialectFor(backend, target));
    // The adopted first step once, plus each step appended since, once.
    expect((await versionRows(d, 'billing_quota_schema_migrations')).map((r) => r.version)).toEqual([1, ...newer(QUOTA_SCHEMA, 1)]);
    expect((await versionRows(d, 'billing_stripe_schema_migrations')).map((r) => r.version)).toEqual([1, ...newer(STRIPE_SCHEMA, 1)]);
    // 3 and 4 adopted from the legacy list, 5 to 8 (compact-tables.ts, fold-rows.ts, entry-ids.ts, stored-results.ts) run once by whichever process got the lock.
    expect((await versionRows(d, 'billing_schema_migrations')).map((r) => r.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it.each([
    ['quota', QUOTA_SCHEMA.versionTable],
    ['stripe', STRIPE_SCHEMA.versionTable],
    ['webhooks', WEBHOOK_SCHEMA.versionTable],
  ])('a newer %s schema is refused with SCHEMA_TOO_NEW before anything changes', async (owner, table) => {
    const target = await backend.freshTarget();
    const d = track(dialectFor(backend, target));
    await migrate(d);
    await migrateServer(d);
    await d.writeTransaction((c) => c.run(`INSERT INTO ${table} (version, name, applied_at) VALUES (99, 'from the future', 0)`));
    const before = await shape(d);
    const failure = await (owner === 'webhooks' ? migrateServer(d) : migrate(d)).then(
      () => null,
      (e: BillingError) => e,
    );
    expect(failure?.code).toBe('SCHEMA_TOO_NEW');
    expect(failure?.details).toEqual({ schemaVersion: 99, supportedVersion: newestVersion([QUOTA_SCHEMA, STRIPE_SCHEMA, WEBHOOK_SCHEMA].find((o) => o.versionTable === table)!) });
    expect(failure?.message).toContain(`has ${owner} schema version 99`);
    expect(await shape(d)).toEqual(before);
    if (owner !== 'webhooks') {
      await d.close();
      opened.pop();
      expect(((await backend.open(target).catch((e: unknown) => e)) as BillingError).code).toBe('SCHEMA_TOO_NEW');
    }
  });

  it('a step recorded in a version table no owner of the run keeps is a programming error, caught before any SQL', async () => {
    const d = track(dialectFor(backend, await backend.freshTarget()));
    await expect(applySchemas(d, [QUOTA_SCHEMA])).rejects.toThrow(/recorded in billing_schema_migrations, which no owner of this run keeps/);
  });
});
