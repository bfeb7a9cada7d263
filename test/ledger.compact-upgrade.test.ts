import Database from 'better-sqlite3';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Dialect } from '../src/ledger/dialect';
import { MIGRATIONS } from './support/legacy/ledger-migrations-v4';
import { openLedger } from '../src/ledger/open';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';

const SAME_SHAPE_TABLES = ['billing_customers', 'billing_holds', 'billing_charges', 'billing_rate_cards'];
const V4_ENTRY_COLUMNS = 'seq, id, customer_id, type, amount, held_delta, balance_after, hold_id, charge_id, idempotency_key, actor, rate_card_version, charge_type, quantity, memo, created_at';
const OPERATION = "CASE type WHEN 'topup' THEN 'topUp' ELSE type END";
// Details kept in an entry leave out its hold and charge ids (stored-results.ts); a line in billing_audit has them.
const LEGACY_DETAILS = `CASE
  WHEN audit_details LIKE 'hc%' THEN '{"holdId":' || json_quote(hold_id) || ',"chargeId":' || json_quote(charge_id) || ',' || substr(audit_details, 4)
  WHEN audit_details LIKE 'h%' THEN '{"holdId":' || json_quote(hold_id) || ',' || substr(audit_details, 3)
  WHEN audit_details LIKE 'c%' THEN '{"chargeId":' || json_quote(charge_id) || ',' || substr(audit_details, 3)
  ELSE audit_details END`;

/**
 * A schema-4 database (as released before step 5) holding exactly what `source` holds: since step 6
 * (fold-rows.ts) an operation's idempotency result and audit line are in its entry, where schema 4
 * kept them in rows of their own.
 */
function schema4Copy(source: string, target: string): void {
  const db = new Database(target);
  db.exec('PRAGMA journal_mode = WAL');
  db.exec('CREATE TABLE billing_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
  const d = { name: 'sqlite', serialPrimaryKey: 'INTEGER PRIMARY KEY AUTOINCREMENT' } as Dialect;
  for (const m of MIGRATIONS.filter((x) => x.version <= 4)) {
    for (const sql of m.statements(d)) db.exec(sql);
    db.prepare('INSERT INTO billing_schema_migrations VALUES (?, ?, 0)').run(m.version, m.name);
  }
  db.prepare('ATTACH DATABASE ? AS src').run(source);
  for (const t of SAME_SHAPE_TABLES) db.exec(`INSERT INTO main.${t} SELECT * FROM src.${t}`);
  db.exec(`INSERT INTO main.billing_entries SELECT ${V4_ENTRY_COLUMNS} FROM src.billing_entries`);
  db.exec(`INSERT INTO main.billing_idempotency (key, operation, fingerprint, customer_id, result, created_at)
    SELECT key, operation, fingerprint, customer_id, result, created_at FROM src.billing_idempotency
    UNION ALL SELECT idempotency_key, ${OPERATION}, fingerprint, customer_id, result, created_at FROM src.billing_entries WHERE fingerprint IS NOT NULL`);
  db.exec(`INSERT INTO main.billing_audit SELECT * FROM (
    SELECT seq, at, actor, operation, idempotency_key, customer_id, rate_card_version, details FROM src.billing_audit
    UNION ALL SELECT seq, created_at, actor, ${OPERATION}, idempotency_key, customer_id, rate_card_version, ${LEGACY_DETAILS} FROM src.billing_entries WHERE audit_details IS NOT NULL
  ) ORDER BY seq`);
  // AUTOINCREMENT's counters, as schema 4 kept them.
  db.exec("INSERT INTO sqlite_sequence (name, seq) SELECT 'billing_entries', MAX(seq) FROM billing_entries");
  db.exec("INSERT INTO sqlite_sequence (name, seq) SELECT 'billing_audit', MAX(seq) FROM billing_audit");
  db.exec('DETACH DATABASE src');
  db.close();
}

async function history(l: SqlLedger) {
  return { statement: await l.statement('u1'), audit: await l.audit(), balance: await l.balance('u1'), invariants: await l.checkInvariants() };
}

describe('schema steps 5 to 8 upgrade an existing SQLite ledger in place', () => {
  it('keeps every row, seq and stored result; replays and conflicts behave as before, also after a restart', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-compact-'));
    const sourceFile = path.join(dir, 'source.sqlite');
    const upgradedFile = path.join(dir, 'v4.sqlite');

    // What a ledger holds after some use: settled, released, pending and refunded money.
    const a = await openLedger(sourceFile);
    await a.createCustomer({ id: 'u1', name: 'User One' });
    await a.topUp({ customerId: 'u1', amount: parseUsd('10'), idempotencyKey: 'top' });
    const settled = await a.hold({ customerId: 'u1', amount: parseUsd('1'), idempotencyKey: 'h1', chargeType: 'Inference', quantity: '2' });
    const charge = await a.settle({ holdId: settled.id, amount: parseUsd('0.04'), idempotencyKey: 's1', metadata: { flow: 'f' } });
    const released = await a.hold({ customerId: 'u1', amount: parseUsd('2'), idempotencyKey: 'h2' });
    await a.release({ holdId: released.id, idempotencyKey: 'r2' });
    const pending = await a.hold({ customerId: 'u1', amount: parseUsd('3'), idempotencyKey: 'h3', ttlMs: 3_600_000 });
    await a.refund({ chargeId: charge.id, amount: parseUsd('0.01'), idempotencyKey: 'ref1' });
    const before = await history(a);
    await a.close();

    schema4Copy(sourceFile, upgradedFile);
    const l = await openLedger(upgradedFile);
    expect(await history(l)).toEqual(before);

    const raw = new Database(upgradedFile, { readonly: true });
    const versions = raw.prepare('SELECT version FROM billing_schema_migrations ORDER BY version').all() as Array<{ version: number }>;
    expect(versions.map((v) => v.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const sql = Object.fromEntries((raw.prepare("SELECT name, sql FROM sqlite_master WHERE name LIKE 'billing_%'").all() as Array<{ name: string; sql: string }>).map((r) => [r.name, r.sql]));
    expect(sql.billing_holds).toMatch(/WITHOUT ROWID$/);
    expect(sql.billing_charges).toMatch(/WITHOUT ROWID$/);
    expect(sql.billing_entries).not.toMatch(/AUTOINCREMENT/);
    expect(sql.billing_holds_pending).toBeDefined();
    expect(sql.billing_holds_open).toBeUndefined();
    expect(sql.billing_holds_customer).toBeUndefined();
    expect(sql.billing_entries).toMatch(/fingerprint TEXT,\s+result TEXT,\s+audit_details TEXT\)$/);
    // Step 7 (entry-ids.ts): the entries' ids carry no unique index; their two indexes are rebuilt.
    expect(sql.billing_entries).not.toMatch(/UNIQUE/);
    const entryIndexes = raw.prepare('SELECT name, "unique" AS u FROM pragma_index_list(\'billing_entries\') ORDER BY name').all();
    expect(entryIndexes).toEqual([{ name: 'billing_entries_customer', u: 0 }, { name: 'billing_entries_key', u: 1 }]);
    expect(sql.billing_entries_key).toMatch(/UNIQUE INDEX billing_entries_key ON billing_entries \(idempotency_key\)/);
    // The upgrade moved nothing: results and audit lines written before stay in their own tables.
    expect(raw.prepare('SELECT COUNT(*) AS n FROM billing_entries WHERE fingerprint IS NOT NULL OR audit_details IS NOT NULL').get()).toEqual({ n: 0 });
    raw.close();

    // Replays return the stored results; the same key with other content is still a conflict.
    expect(await l.hold({ customerId: 'u1', amount: parseUsd('1'), idempotencyKey: 'h1', chargeType: 'Inference', quantity: '2' })).toEqual(settled);
    expect(await l.settle({ holdId: settled.id, amount: parseUsd('0.04'), idempotencyKey: 's1', metadata: { flow: 'f' } })).toEqual(charge);
    await expect(l.hold({ customerId: 'u1', amount: parseUsd('5'), idempotencyKey: 'h1' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    await expect(l.settle({ holdId: released.id, amount: 1n, idempotencyKey: 's-released' })).rejects.toMatchObject({ code: 'HOLD_NOT_PENDING' });

    // The pending hold settles; new journal and audit lines continue after the copied ones.
    const late = await l.settle({ holdId: pending.id, amount: parseUsd('0.5'), idempotencyKey: 's3' });
    expect(late.amount).toBe(parseUsd('0.5'));
    const after = await history(l);
    expect(after.statement.slice(0, before.statement.length)).toEqual(before.statement);
    expect(after.statement.at(-1)!.seq).toBeGreaterThan(before.statement.at(-1)!.seq);
    expect(after.audit.at(-1)!.seq).toBeGreaterThan(before.audit.at(-1)!.seq);
    expect(after.balance).toMatchObject({ balance: before.balance.balance - parseUsd('0.5'), held: 0n });
    expect(after.invariants).toEqual({ ok: true, violations: [] });
    await l.close();

    // After a restart: nothing migrates twice, replays still answer the same.
    const again = await openLedger(upgradedFile);
    expect(await again.settle({ holdId: pending.id, amount: parseUsd('0.5'), idempotencyKey: 's3' })).toEqual(late);
    await expect(again.settle({ holdId: pending.id, amount: parseUsd('0.6'), idempotencyKey: 's3' })).rejects.toMatchObject({ code: 'IDEMPOTENCY_CONFLICT' });
    expect(await history(again)).toEqual(after);
    await again.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});
