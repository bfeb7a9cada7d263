import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { closeSharedLedgers, ledgerKey, sharedLedger } from '../src/plugin/ledgers';
import { BACKENDS } from './support/backends';

// Queue mode runs predictions in workers, usually other containers: a SQLite ledger there is a file per worker.
describe('shared ledgers in Flowise queue mode', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ledgers-'));
  const saved = process.env.MODE;
  afterEach(async () => {
    if (saved === undefined) delete process.env.MODE;
    else process.env.MODE = saved;
    await closeSharedLedgers();
  });

  /** The billing warnings Node emits while `fn` runs (emitWarning delivers them on a later tick). */
  async function warnings(fn: () => Promise<unknown>): Promise<Error[]> {
    const seen: Error[] = [];
    const on = (w: Error) => {
      if ((w as { code?: string }).code === 'FLOWISE_BILLING_SQLITE_IN_QUEUE_MODE') seen.push(w);
    };
    process.on('warning', on);
    try {
      await fn();
      await new Promise((r) => setTimeout(r, 20));
    } finally {
      process.off('warning', on);
    }
    return seen;
  }

  it('warns once per SQLite ledger when MODE=queue, naming the fix', async () => {
    process.env.MODE = 'queue';
    const file = path.join(tmp, 'queue.sqlite');
    const seen = await warnings(async () => {
      await sharedLedger(file);
      await sharedLedger(file);
    });
    expect(seen).toHaveLength(1);
    expect(seen[0]!.message).toContain(file);
    expect(seen[0]!.message).toContain('FLOWISE_BILLING_DB=postgres://');
  });

  it('says nothing outside queue mode', async () => {
    delete process.env.MODE;
    expect(await warnings(() => sharedLedger(path.join(tmp, 'main.sqlite')))).toEqual([]);
  });

  const pg = BACKENDS.find((b) => b.name === 'postgres');
  it.skipIf(!pg)('says nothing for a PostgreSQL ledger in queue mode', async () => {
    process.env.MODE = 'queue';
    const target = await pg!.freshTarget();
    expect(await warnings(() => sharedLedger(target))).toEqual([]);
  });
});

// A credential holding another scheme (mysql://, a typo such as postgre://) must not become an SQLite path:
// it opened a ledger file under ./mysql:/user:password@host/ in Flowise's working directory.
describe('a ledger location with an unsupported scheme', () => {
  afterEach(() => closeSharedLedgers());

  it('is refused as VALIDATION_ERROR without a file, and the error never carries the password', async () => {
    const cwd = process.cwd();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-scheme-'));
    process.chdir(tmp);
    try {
      for (const url of ['mysql://u:SuperSecretPw@h/db', 'postgre://u:SuperSecretPw@h/db']) {
        expect(ledgerKey(url)).toBe(url);
        const e = await sharedLedger(url).then(() => null, (err: unknown) => err as { code?: string; message: string });
        expect(e?.code).toBe('VALIDATION_ERROR');
        expect(e?.message).toMatch(/Unsupported ledger location scheme/);
        expect(JSON.stringify({ m: e?.message, d: (e as { details?: unknown }).details })).not.toContain('SuperSecretPw');
      }
      expect(fs.readdirSync(tmp)).toEqual([]);
    } finally {
      process.chdir(cwd);
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
