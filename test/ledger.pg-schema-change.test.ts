import { Client } from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { BACKENDS, PG_BASE_URL } from './support/backends';

const pg = BACKENDS.find((b) => b.name === 'postgres');

/**
 * The PostgreSQL backend keeps its recurring statements prepared on each
 * connection. When another process adds a column to a ledger table (a newer
 * version migrating), PostgreSQL refuses every prepared `SELECT *` on that
 * table ("cached plan must not change result type"). The ledger must carry on:
 * no operation fails, and the money stays exact.
 */
describe.skipIf(!pg)('a ledger table changing shape under prepared statements on postgres', () => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });

  it('operations and reads keep working after another session adds columns; the journal still sums', async () => {
    const target = await pg!.freshTarget();
    const schema = new URL(target).searchParams.get('schema')!;
    const ledger = await pg!.open(target, { poolSize: 4 });
    opened.push(ledger);
    await ledger.createCustomer({ id: 'shape' });
    await ledger.topUp({ customerId: 'shape', amount: parseUsd('100'), idempotencyKey: 'shape-topup' });
    const pairs = async (tag: string, n: number) => {
      // Concurrent pairs, so several pooled connections prepare the same statements.
      await Promise.all(
        Array.from({ length: n }, async (_, i) => {
          const h = await ledger.hold({ customerId: 'shape', amount: parseUsd('1'), idempotencyKey: `${tag}-${i}` });
          await ledger.settle({ holdId: h.id, amount: parseUsd('0.25'), idempotencyKey: `${tag}-${i}-s` });
          await ledger.balance('shape');
        }),
      );
    };
    for (let round = 0; round < 4; round++) await pairs(`before-${round}`, 8);

    const admin = new Client({ connectionString: PG_BASE_URL });
    await admin.connect();
    try {
      for (const table of ['billing_customers', 'billing_holds', 'billing_idempotency']) {
        await admin.query(`ALTER TABLE ${schema}.${table} ADD COLUMN later_column TEXT`);
      }
    } finally {
      await admin.end();
    }

    for (let round = 0; round < 4; round++) await pairs(`after-${round}`, 8);
    const b = await ledger.balance('shape');
    expect(b.balance).toBe(parseUsd('100') - parseUsd('0.25') * 64n);
    expect(b.held).toBe(0n);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
  }, 60_000);
});
