import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openLedger } from '../src/ledger/open';

// The writer checkpoints every 16,000 WAL pages (~64 MB, sqlite.ts) and then starts the WAL over.
// The WAL must stay bounded and the ledger exact.
describe('SQLite WAL checkpoints', () => {
  it('a ledger writing thousands of operations keeps its WAL bounded, closes cleanly and stays exact', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ckpt-'));
    const file = path.join(dir, 'ledger.sqlite');
    const ledger = await openLedger(file);
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
    expect(largestWal).toBeLessThan(72 * 2 ** 20);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
    expect((await ledger.balance('c')).balance).toBe(10n ** 15n - 40_000n);
    await ledger.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);
});
