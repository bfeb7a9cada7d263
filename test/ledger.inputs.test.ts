import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { BillingError, ERROR_CODES } from '../src/errors';
import { SCHEMA_VERSION } from '../src/ledger/migrations';
import { openLedger } from '../src/ledger/open';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { MAX_RATE_CARD_BYTES, MAX_RATE_CARD_MODELS, parseRateCard, readRateCardFile } from '../src/pricing/ratecard';
import defaultDoc from '../ratecards/default.json';
import { BACKENDS } from './support/backends';

/** The error `fn` rejects or throws with (fails the test when it succeeds). */
async function failure(fn: () => unknown): Promise<BillingError> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BillingError);
    return e as BillingError;
  }
  throw new Error('expected a failure');
}

describe.each(BACKENDS)('bad input is VALIDATION_ERROR and changes nothing on $name', (backend) => {
  let ledger: SqlLedger;
  const opened: SqlLedger[] = [];
  beforeEach(async () => {
    ledger = await backend.open(await backend.freshTarget());
    opened.push(ledger);
    await ledger.createCustomer({ id: 'acme' });
    await ledger.topUp({ customerId: 'acme', amount: parseUsd('10'), idempotencyKey: 'seed' });
  });
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });
  const snapshot = async () => ({ balance: await ledger.balance('acme'), entries: await ledger.statement('acme'), audit: (await ledger.audit()).length });

  it('non-string ids, in lookups and in mutations', async () => {
    const before = await snapshot();
    const bad: unknown[] = [123, { id: 'acme' }, null, ['acme'], 10n, ''];
    for (const id of bad) {
      const calls: Array<() => unknown> = [
        () => ledger.balance(id as string),
        () => ledger.findCustomer(id as string),
        () => ledger.getCustomer(id as string),
        () => ledger.budget(id as string),
        () => ledger.statement(id as string),
        () => ledger.audit({ customerId: id as string }),
        () => ledger.getHold(id as string),
        () => ledger.getCharge(id as string),
        () => ledger.getRateCard(id as string),
        () => ledger.createCustomer({ id: id as string }),
        () => ledger.topUp({ customerId: id as string, amount: 1n, idempotencyKey: 'k1' }),
        () => ledger.hold({ customerId: id as string, amount: 1n, idempotencyKey: 'k2' }),
        () => ledger.charge({ customerId: id as string, amount: 1n, idempotencyKey: 'k3' }),
        () => ledger.settle({ holdId: id as string, amount: 1n, idempotencyKey: 'k4' }),
      ];
      for (const call of calls) expect((await failure(call)).code, `${String(call)} with ${typeof id}`).toBe('VALIDATION_ERROR');
    }
    expect((await failure(() => ledger.statement('acme', { limit: Number.NaN }))).code).toBe('VALIDATION_ERROR');
    expect((await failure(() => ledger.statement('acme', { afterSeq: '1' as unknown as number }))).code).toBe('VALIDATION_ERROR');
    expect(await snapshot()).toEqual(before);
  });

  it('an actor with control characters (the CLI prints it in tables and CSV rows)', async () => {
    const h = await ledger.hold({ customerId: 'acme', amount: parseUsd('1'), idempotencyKey: 'h-actor' });
    const before = await snapshot();
    for (const actor of ['ops\nforged line', 'red\u001b[31m', 'tab\there', 'nul\u0000']) {
      for (const call of [
        () => ledger.topUp({ customerId: 'acme', amount: 1n, idempotencyKey: 't-actor', actor }),
        () => ledger.hold({ customerId: 'acme', amount: 1n, idempotencyKey: 'h2-actor', actor }),
        () => ledger.settle({ holdId: h.id, amount: 1n, idempotencyKey: 's-actor', actor }),
        () => ledger.charge({ customerId: 'acme', amount: 1n, idempotencyKey: 'c-actor', actor }),
      ]) {
        const e = await failure(call);
        expect(e.code, JSON.stringify(actor)).toBe('VALIDATION_ERROR');
        expect(e.message).toMatch(/actor/);
      }
    }
    expect(await snapshot()).toEqual(before);
    await ledger.settle({ holdId: h.id, amount: 1n, idempotencyKey: 's-actor', actor: 'ops team' });
  });

  it('circular, bigint and oversized metadata', async () => {
    const circular: Record<string, unknown> = { a: 1 };
    circular.self = circular;
    const metadatas: Record<string, unknown>[] = [circular, { n: 10n }, { nested: { deeper: [1, 2n] } }, { big: 'x'.repeat(20_000) }];
    const h = await ledger.hold({ customerId: 'acme', amount: parseUsd('1'), idempotencyKey: 'h' });
    const before = await snapshot();
    for (const metadata of metadatas) {
      for (const call of [
        () => ledger.charge({ customerId: 'acme', amount: 1n, idempotencyKey: 'c', metadata }),
        () => ledger.hold({ customerId: 'acme', amount: 1n, idempotencyKey: 'h2', metadata }),
        () => ledger.settle({ holdId: h.id, amount: 1n, idempotencyKey: 's', metadata }),
      ]) {
        const e = await failure(call);
        expect(e.code).toBe('VALIDATION_ERROR');
        expect(e.message).toMatch(/metadata/);
      }
    }
    expect(await snapshot()).toEqual(before);
    // The keys were not consumed: the same keys succeed with good metadata.
    await ledger.settle({ holdId: h.id, amount: 1n, idempotencyKey: 's', metadata: { ok: true } });
  });

  it('a database migrated by a newer flowise-billing is refused with SCHEMA_TOO_NEW, and left untouched', async () => {
    const target = await backend.freshTarget();
    const newer = await backend.open(target);
    await newer.dialect.writeTransaction((c) =>
      c.run('INSERT INTO billing_schema_migrations (version, name, applied_at) VALUES (?, ?, ?)', [SCHEMA_VERSION + 1, 'from the future', 0]),
    );
    await newer.close();
    const e = await failure(() => backend.open(target));
    expect(e.code).toBe('SCHEMA_TOO_NEW');
    expect(e.details).toEqual({ schemaVersion: SCHEMA_VERSION + 1, supportedVersion: SCHEMA_VERSION });
    expect(e.message).toMatch(/upgrade flowise-billing/);
    expect(ERROR_CODES).toContain('SCHEMA_TOO_NEW');
  });
});

describe('rate card limits', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ratecard-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const withModels = (n: number) => ({
    ...defaultDoc,
    version: `many-${n}`,
    models: Object.fromEntries(Array.from({ length: n }, (_, i) => [`model-${i}`, { inputUsdPer1k: '0.001', outputUsdPer1k: '0.002' }])),
  });

  it(`refuses more than ${MAX_RATE_CARD_MODELS} models and more than ${MAX_RATE_CARD_BYTES} bytes`, () => {
    expect(parseRateCard(withModels(MAX_RATE_CARD_MODELS)).models.size).toBe(MAX_RATE_CARD_MODELS);
    const tooMany = (() => {
      try {
        parseRateCard(withModels(MAX_RATE_CARD_MODELS + 1));
      } catch (e) {
        return e as BillingError;
      }
    })();
    expect(tooMany?.code).toBe('VALIDATION_ERROR');
    expect(tooMany?.message).toMatch(/at most 5000 models/);

    const huge = JSON.stringify({ ...defaultDoc, description: 'x'.repeat(MAX_RATE_CARD_BYTES) });
    expect(() => parseRateCard(huge)).toThrow(/byte limit/);
  });

  it('reads a rate card file; refuses an oversized file, /dev/zero and a FIFO without reading forever', () => {
    const good = path.join(tmp, 'good.json');
    fs.writeFileSync(good, JSON.stringify(defaultDoc));
    expect(readRateCardFile(good).version).toBe(defaultDoc.version);

    const big = path.join(tmp, 'big.json');
    fs.writeFileSync(big, JSON.stringify({ ...defaultDoc, description: ' '.repeat(MAX_RATE_CARD_BYTES) }));
    const refuse = (file: string, pattern: RegExp) => {
      const started = Date.now();
      let err: BillingError | undefined;
      try {
        readRateCardFile(file);
      } catch (e) {
        err = e as BillingError;
      }
      expect(err?.code, file).toBe('VALIDATION_ERROR');
      expect(err?.message).toMatch(pattern);
      expect(Date.now() - started).toBeLessThan(5_000);
    };
    refuse(big, /over the 1048576-byte limit/);
    refuse('/dev/zero', /not a regular file/);
    refuse(tmp, /not a regular file/);
    refuse(path.join(tmp, 'missing.json'), /ENOENT/);
    const fifo = path.join(tmp, 'fifo');
    execFileSync('mkfifo', [fifo]);
    refuse(fifo, /not a regular file/);
  });
});

describe('PostgreSQL URLs in errors', () => {
  it('a malformed URL or schema never echoes the password', async () => {
    for (const url of ['postgres://user:s3cr3t-pw@host:99999/x', 'postgres://user:s3cr3t-pw@127.0.0.1:5432/x?schema=Bad-Name']) {
      const e = await failure(() => openLedger(url));
      expect(e.code).toBe('VALIDATION_ERROR');
      expect(`${e.message} ${JSON.stringify(e.details)} ${e.stack}`).not.toContain('s3cr3t-pw');
    }
  });
});
