import Database from 'better-sqlite3';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openLedger } from '../src/ledger/open';

// The writer checkpoints every 16,000 WAL pages (~32 MB, sqlite.ts) and then starts the WAL over; with
// `checkpoint: 'background'` a thread checkpoints and the writer's own is a backstop at 64,000 pages
// (~127 MiB). Either way the WAL must stay bounded and the ledger exact.
describe('SQLite WAL checkpoints', () => {
  it.each([
    ['inline', 72],
    ['background', 136],
  ] as const)('a ledger writing thousands of operations keeps its WAL bounded, closes cleanly and stays exact (%s)', async (checkpoint, boundMiB) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ckpt-'));
    const file = path.join(dir, 'ledger.sqlite');
    const ledger = await openLedger(file, { sqlite: { checkpoint } });
    await ledger.createCustomer({ id: 'c' });
    await ledger.topUp({ customerId: 'c', amount: 10n ** 15n, idempotencyKey: 'seed' });
    let largestWal = 0;
    for (let i = 0; i < 4000; i++) {
      const h = await ledger.hold({ customerId: 'c', amount: 1_000n, idempotencyKey: `h${i}` });
      await ledger.settle({ holdId: h.id, amount: 10n, idempotencyKey: `s${i}` });
      if (i % 200 === 0) largestWal = Math.max(largestWal, fs.statSync(`${file}-wal`).size);
    }
    largestWal = Math.max(largestWal, fs.statSync(`${file}-wal`).size);
    // 8,000 operations write about 8 pages of WAL each, over 250 MB in all; the file is reused, not grown.
    expect(largestWal).toBeGreaterThan(8 * 2 ** 20);
    expect(largestWal).toBeLessThan(boundMiB * 2 ** 20);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
    expect((await ledger.balance('c')).balance).toBe(10n ** 15n - 40_000n);
    await ledger.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  it('a new ledger file has 2 KiB pages; a file made with 4 KiB pages keeps them and stays exact', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-pages-'));
    const fresh = path.join(dir, 'new.sqlite');
    const ledger = await openLedger(fresh);
    await ledger.createCustomer({ id: 'c' });
    await ledger.close();
    expect(pageSize(fresh)).toBe(2048);

    // A ledger created before the change: SQLite's default page size, fixed once the file has a table.
    const old = path.join(dir, 'old.sqlite');
    const db = new Database(old);
    db.exec('PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; CREATE TABLE made_before (x INTEGER)');
    db.close();
    const again = await openLedger(old);
    await again.createCustomer({ id: 'c' });
    await again.topUp({ customerId: 'c', amount: 10n ** 12n, idempotencyKey: 'seed' });
    const h = await again.hold({ customerId: 'c', amount: 1_000n, idempotencyKey: 'h' });
    await again.settle({ holdId: h.id, amount: 10n, idempotencyKey: 's' });
    expect(await again.checkInvariants()).toEqual({ ok: true, violations: [] });
    await again.close();
    expect(pageSize(old)).toBe(4096);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

function pageSize(file: string): number {
  const db = new Database(file, { readonly: true });
  try {
    return Number(db.pragma('page_size', { simple: true }));
  } finally {
    db.close();
  }
}
