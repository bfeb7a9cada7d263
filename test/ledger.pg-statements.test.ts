import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { configureOutbox } from '../src/stripe/customers';
import { BACKENDS } from './support/backends';
import { outboxRows } from './support/stripe-fixture';

const backend = BACKENDS.find((b) => b.name === 'postgres');

/**
 * What a lone operation asks of PostgreSQL: BEGIN, the customer lock, one
 * statement for every read after the lock (holds, idempotency rows, outbox
 * state), one write, COMMIT. Counted at the driver, so it does not depend on
 * the machine's load.
 */
describe.skipIf(!backend)('PostgreSQL statements per lone operation', () => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close()));
  });
  const open = async () => {
    const ledger = await backend!.open(await backend!.freshTarget());
    opened.push(ledger);
    return ledger;
  };

  /** Statements the driver was given while `fn` ran. */
  async function counted(fn: () => Promise<unknown>): Promise<string[]> {
    const texts: string[] = [];
    const original = pg.Client.prototype.query;
    const spy = function (this: pg.Client, ...args: unknown[]) {
      const config = args[0] as string | { text?: string };
      texts.push(typeof config === 'string' ? config : String(config.text));
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    };
    pg.Client.prototype.query = spy as typeof original;
    try {
      await fn();
    } finally {
      pg.Client.prototype.query = original;
    }
    return texts;
  }

  it('a hold and a settle are five statements each, with the Stripe outbox on; a replay four (nothing to write)', async () => {
    const ledger = await open();
    await ledger.createCustomer({ id: 'st' });
    await ledger.topUp({ customerId: 'st', amount: parseUsd('10'), idempotencyKey: 'st-seed' });
    await configureOutbox(ledger);
    let holdId = '';
    const hold = await counted(async () => {
      holdId = (await ledger.hold({ customerId: 'st', amount: parseUsd('1'), idempotencyKey: 'st-h' })).id;
    });
    const settle = await counted(() => ledger.settle({ holdId, amount: parseUsd('0.25'), idempotencyKey: 'st-s' }));
    const replay = await counted(() => ledger.settle({ holdId, amount: parseUsd('0.25'), idempotencyKey: 'st-s' }));
    for (const texts of [hold, settle, replay]) {
      expect(texts[0]).toBe('BEGIN');
      expect(texts[1]).toMatch(/FOR UPDATE$/);
      expect(texts.at(-1)).toBe('COMMIT');
    }
    expect([hold.length, settle.length, replay.length]).toEqual([5, 5, 4]);
    expect((await outboxRows(ledger)).map((r) => r.amountNanos)).toEqual([250_000_000n]);
  });

  it('amounts past 2^53 nano-USD come back exact through the combined read (holds, idempotent results, outbox totals)', async () => {
    const ledger = await open();
    await ledger.createCustomer({ id: 'big' });
    await ledger.topUp({ customerId: 'big', amount: parseUsd('900000000'), idempotencyKey: 'big-seed' });
    await configureOutbox(ledger);
    const amount = parseUsd('90000000.000000001'); // 9e16 + 1 nanos: not a double
    const h = await ledger.hold({ customerId: 'big', amount, idempotencyKey: 'big-h' });
    expect(h.amount).toBe(amount);
    // The replay's result is decoded from the stored row, read in the same statement as the holds.
    expect((await ledger.hold({ customerId: 'big', amount, idempotencyKey: 'big-h' })).amount).toBe(amount);
    const partial = parseUsd('10000000.000000003');
    const first = await ledger.settle({ holdId: h.id, amount: partial, final: false, idempotencyKey: 'big-s1' });
    expect(first.amount).toBe(partial);
    // The hold's remaining amount and the outbox running total (past 2^53) are read back for the second settle.
    const second = await ledger.settle({ holdId: h.id, amount: amount - partial, idempotencyKey: 'big-s2' });
    expect(second.amount).toBe(amount - partial);
    const b = await ledger.balance('big');
    expect(b.balance).toBe(parseUsd('900000000') - amount);
    expect(b.held).toBe(0n);
    expect((await outboxRows(ledger)).map((r) => r.amountNanos)).toEqual([partial, amount - partial]);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });
});
