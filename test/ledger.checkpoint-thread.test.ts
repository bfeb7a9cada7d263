import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ValidationError } from '../src/errors';
import { parseUsd } from '../src/money';
import { openLedger } from '../src/ledger/open';
import { sqliteCheckpointMode } from '../src/ledger/sqlite';
import { FLOWISE_NODE } from './support/flowise-cache';
import { spawnWorker } from './support/processes';

// The WAL checkpointed by a thread (src/ledger/checkpointer.ts): it runs, a process that never closes its
// ledger still exits, a kill -9 in the middle of its checkpoints loses no acknowledged operation, and a
// bad setting is refused before any file is made.
const ROOT = path.resolve(__dirname, '..');
const built = fs.existsSync(path.join(ROOT, 'dist', 'src', 'ledger', 'checkpointer.js'));
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ckpt-'));

async function seeded(file: string): Promise<void> {
  const l = await openLedger(file);
  await l.createCustomer({ id: 'ckpt' });
  await l.topUp({ customerId: 'ckpt', amount: parseUsd('1000'), idempotencyKey: 'seed' });
  await l.close();
}

describe('SQLite background checkpoint', () => {
  it('checkpoints from its thread once the WAL is ahead, and inline mode never starts one', async () => {
    const dir = tmp();
    for (const mode of ['background', 'inline'] as const) {
      const file = path.join(dir, `${mode}.sqlite`);
      const ledger = await openLedger(file, { sqlite: { checkpoint: mode } });
      await ledger.createCustomer({ id: 'ckpt' });
      await ledger.topUp({ customerId: 'ckpt', amount: parseUsd('1000'), idempotencyKey: 'seed' });
      for (let i = 0; i < 1500; i++) {
        const h = await ledger.hold({ customerId: 'ckpt', amount: 5000n, idempotencyKey: `h:${i}` });
        await ledger.settle({ holdId: h.id, amount: 1000n, idempotencyKey: `s:${i}` });
      }
      for (let t = 0; t < 250 && mode === 'background' && ledger.dialect.backgroundCheckpoints!() === 0; t++) await new Promise((r) => setTimeout(r, 20));
      if (mode === 'background') expect(ledger.dialect.backgroundCheckpoints!()).toBeGreaterThan(0);
      else expect(ledger.dialect.backgroundCheckpoints!()).toBe(0);
      expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
      expect((await ledger.balance('ckpt')).balance).toBe(parseUsd('1000') - 1500n * 1000n);
      await ledger.close();
      // Closed: the thread is gone and the writer, closing last, removed the WAL.
      expect(fs.existsSync(`${file}-wal`)).toBe(false);
    }
  });

  // Flowise runs on Node 24, where the thread opens its connection with node:sqlite (ledger.node-sqlite.test.ts).
  const exitsAlone = async (node: string) => {
    const file = path.join(tmp(), 'exit.sqlite');
    await seeded(file);
    const r = spawnSync(node, ['--disable-warning=ExperimentalWarning', path.join(ROOT, 'test', 'support', 'checkpoint-worker.cjs'), file, 'exit'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^checkpoints [1-9]\d*$/m);
  };
  it.skipIf(!built)('a process that never closes its ledger still exits', () => exitsAlone(process.execPath));
  it.skipIf(!built || !fs.existsSync(FLOWISE_NODE))('the same on Node 24, where the thread uses node:sqlite', () => exitsAlone(FLOWISE_NODE));

  it.skipIf(!built)('kill -9 while the thread checkpoints loses no acknowledged operation', async () => {
    const file = path.join(tmp(), 'crash.sqlite');
    await seeded(file);
    const w = spawnWorker('checkpoint-worker.cjs', [file, 'crash']);
    await w.ready;
    for (let i = 0; i < 1200 && !w.output().includes('checkpointing'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(w.output()).toContain('checkpointing');
    await new Promise((r) => setTimeout(r, 300));
    w.child.kill('SIGKILL');
    await w.result.catch(() => undefined);
    expect(w.child.signalCode).toBe('SIGKILL');
    const acked = Math.max(...[...w.output().matchAll(/^acked (\d+)$/gm)].map((m) => Number(m[1])));
    expect(acked).toBeGreaterThan(0);

    const ledger = await openLedger(file);
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
    // Every settle charged 1000 nanos: the balance counts the committed ones, at least all acknowledged.
    const settled = (parseUsd('1000') - (await ledger.balance('ckpt')).balance) / 1000n;
    expect(settled).toBeGreaterThanOrEqual(BigInt(acked));
    await ledger.close();
  });

  it('refuses an unknown mode with a typed error before opening anything', async () => {
    expect(sqliteCheckpointMode(undefined)).toBe('inline');
    expect(sqliteCheckpointMode(' background ')).toBe('background');
    expect(() => sqliteCheckpointMode('sometimes')).toThrow(ValidationError);
    const file = path.join(tmp(), 'bad.sqlite');
    const before = process.env.FLOWISE_BILLING_SQLITE_CHECKPOINT;
    process.env.FLOWISE_BILLING_SQLITE_CHECKPOINT = 'sometimes';
    try {
      await expect(openLedger(file)).rejects.toMatchObject({ code: 'VALIDATION_ERROR', message: expect.stringContaining('inline, background') });
    } finally {
      if (before === undefined) delete process.env.FLOWISE_BILLING_SQLITE_CHECKPOINT;
      else process.env.FLOWISE_BILLING_SQLITE_CHECKPOINT = before;
    }
    expect(fs.existsSync(file)).toBe(false);
  });
});
