import { afterAll, describe, expect, it } from 'vitest';
import type { Dialect, SqlConnection } from '../src/ledger/dialect';
import { postgresDialect } from '../src/ledger/postgres';
import { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { BACKENDS } from './support/backends';
import { spawnWorker, startTogether } from './support/processes';

const DOLLAR = parseUsd('1');

describe.each(BACKENDS)('createCustomer racing topUp on $name', (backend) => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });

  // PostgreSQL is where the race lost money (row locks cannot lock a row that does not exist yet); SQLite has one writer.
  const procs = backend.name === 'postgres' ? 8 : 4;
  const ids = backend.name === 'postgres' ? 300 : 100;
  it(`${procs} OS processes each create the same ${ids} customers and top each up $1: no top-up is lost`, async () => {
    const target = await backend.freshTarget();
    const ledger = await backend.open(target);
    opened.push(ledger);
    const workers = Array.from({ length: procs }, (_, p) => spawnWorker('create-race-worker.cjs', [target, String(ids), `p${p}`]));
    await startTogether(workers);
    const counts = (await Promise.all(workers.map((w) => w.result))).map((line) => JSON.parse(line));
    expect(counts.flatMap((c) => c.errors)).toEqual([]);
    expect(counts.reduce((s, c) => s + c.topUps, 0)).toBe(procs * ids);

    const customers = await ledger.listCustomers();
    expect(customers).toHaveLength(ids);
    const lost: string[] = [];
    for (let i = 0; i < ids; i++) {
      const b = await ledger.balance(`race-${i}`);
      if (b.balance !== DOLLAR * BigInt(procs)) lost.push(`race-${i}: ${b.balance}`);
    }
    expect(lost).toEqual([]);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
  }, 180_000);
});

/**
 * A dialect whose first customer lookup pauses, with its transaction open,
 * until the test lets it go: the moment in which another process's create and
 * top-up commit. The pause is the only artificial part; both sides are real
 * PostgreSQL sessions.
 */
function pausedAfterCustomerLookup(d: Dialect) {
  let armed = true;
  let reached!: () => void;
  let release!: () => void;
  const atPause = new Promise<void>((r) => (reached = r));
  const go = new Promise<void>((r) => (release = r));
  const dialect: Dialect = {
    ...d,
    writeTransaction: (fn) =>
      d.writeTransaction((c) => {
        const paused: SqlConnection = {
          run: (sql, params) => c.run(sql, params),
          async query(sql, params) {
            const rows = await c.query(sql, params);
            if (armed && /FROM billing_customers WHERE/.test(sql)) {
              armed = false;
              reached();
              await go;
            }
            return rows as never;
          },
        };
        return fn(paused);
      }),
  };
  return { dialect, atPause, release };
}

describe.skipIf(!BACKENDS.some((b) => b.name === 'postgres'))('the issue #10 reproduction on postgres', () => {
  it('process A creates X and tops it up $100 while B\'s createCustomer(X) is in flight: the $100 stays', async () => {
    const backend = BACKENDS.find((b) => b.name === 'postgres')!;
    const target = await backend.freshTarget();
    const a = await backend.open(target);
    const gate = pausedAfterCustomerLookup(postgresDialect({ url: target }));
    const b = await SqlLedger.open(gate.dialect);
    try {
      const bCreate = b.createCustomer({ id: 'X', name: 'Xavier' });
      await gate.atPause; // B looked for X, found nothing, and holds its transaction open
      await a.createCustomer({ id: 'X', name: 'Xavier' });
      await a.topUp({ customerId: 'X', amount: parseUsd('100'), idempotencyKey: 'a-topup' });
      gate.release();
      expect(await bCreate).toMatchObject({ id: 'X', name: 'Xavier' });

      for (const reader of [a, b]) expect((await reader.balance('X')).balance).toBe(parseUsd('100'));
      expect((await a.statement('X')).map((e) => [e.type, e.amount])).toEqual([['topup', parseUsd('100')]]);
      expect(await a.checkInvariants()).toEqual({ ok: true, violations: [] });
      // B's create became the existing customer: one creation in the audit trail.
      expect((await a.audit({ customerId: 'X' })).filter((r) => r.operation === 'createCustomer')).toHaveLength(1);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
