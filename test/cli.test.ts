import { execSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliCommand } from '../src/cli/demo';
import { LEDGER_SCHEMA, SCHEMA_VERSION } from '../src/ledger/migrations';
import { QUOTA_SCHEMA } from '../src/quota/schema';
import { STRIPE_SCHEMA } from '../src/stripe/schema';
import { BACKENDS } from './support/backends';
import { CLI_MAIN, type CliResult, runCli } from './support/cli-run';

/**
 * The operator CLI as a real subprocess (`node dist/src/cli/main.js`): the
 * `test` script builds first; run `npm run build` before running this file alone.
 */

const ROOT = path.resolve(__dirname, '..');
const MAIN = CLI_MAIN;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-cli-test-'));

const run = (args: string[], opts: { env?: Record<string, string> } = {}): Promise<CliResult> => runCli(args, { env: opts.env, cwd: ROOT });

/** Runs with --json and checks stdout is exactly one JSON object on one line. */
async function json(args: string[], opts: { env?: Record<string, string>; exit?: number } = {}): Promise<Record<string, any>> {
  const r = await run([...args, '--json'], opts);
  const context = `flowise-billing ${args.join(' ')} → exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
  expect(r.code, context).toBe(opts.exit ?? 0);
  expect(r.stdout.endsWith('\n'), context).toBe(true);
  expect(r.stdout.trimEnd().split('\n'), context).toHaveLength(1);
  const value = JSON.parse(r.stdout) as Record<string, any>;
  expect(typeof value, context).toBe('object');
  expect(r.stderr, context).toBe('');
  return value;
}

function expectError(out: Record<string, any>, code: string) {
  expect(Object.keys(out)).toEqual(['error']);
  expect(out.error.code).toBe(code);
  expect(typeof out.error.message).toBe('string');
  expect(out.error.message.length).toBeGreaterThan(5);
  expect(typeof out.error.details).toBe('object');
}

const USD = /^-?\d+\.\d{2,9}$/;

beforeAll(() => {
  if (!fs.existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first (npm test does)`);
});

afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

const RATE_CARD_V2 = {
  version: 'cli-test-v2',
  currency: 'USD',
  chargeTypes: {
    Inference: { unit: 'image', usd: '0.03' },
    ObjectGenerator: { unit: 'token', usd: '0.000025' },
    ObjectTransformer: { unit: 'transform', usd: '0.01' },
    Zipper: { unit: 'MB', usd: '0.0035', fixedUsd: '0.01' },
    Training: { unit: 'minute', usd: '0.06' },
    PrivateFlowRun: { unit: 'run', usd: '0.01' },
    FreePublicFlowRun: { unit: 'run', usd: '0.28' },
    PaidPublicFlowRun: { unit: 'USD of run price', usd: '0.23', fixedUsd: '0.39' },
  },
  resources: {
    tokens: { unit: 'token', per: 1000, sparks: '100' },
    compute: { unit: 'minute', sparks: '50' },
    storage: { unit: 'GB-month', sparks: '500' },
  },
};

// Backends (and the SQLite-only suite) run side by side; inside a backend the steps build on each other.
describe.concurrent.each(BACKENDS)('CLI on $name', (backend) => {
  let db: string;
  const cli = (args: string[], opts: { exit?: number } = {}) => json(['--db', db, ...args], opts);
  let chargeId: string;

  beforeAll(async () => {
    db = await backend.freshTarget();
  });

  it.sequential('migrate, customers and top-ups (idempotent replay with --key)', async () => {
    const migrated = await cli(['migrate']);
    expect(migrated).toMatchObject({ migrated: true, schemaVersion: SCHEMA_VERSION, backend: backend.name });
    expect(migrated.location).toEqual(backend.name === 'sqlite' ? db : expect.stringContaining('schema=t_'));
    // A fresh database: every step of every owner ran; a second run finds nothing to do.
    expect(migrated.applied).toEqual({ ledger: LEDGER_SCHEMA.steps.map((s) => s.version), quota: QUOTA_SCHEMA.steps.map((s) => s.version), stripe: STRIPE_SCHEMA.steps.map((s) => s.version) });
    expect((await cli(['migrate'])).applied).toEqual({ ledger: [], quota: [], stripe: [] });

    const created = await cli(['customers', 'create', 'acme', '--name', 'Acme Inc']);
    expect(created).toMatchObject({ customerId: 'acme', name: 'Acme Inc', created: true, createdAt: expect.any(String) });
    const [again, renamed, nobody] = await Promise.all([
      cli(['customers', 'create', 'acme']),
      cli(['customers', 'create', 'acme', '--name', 'Someone else'], { exit: 1 }),
      cli(['customers', 'show', 'nobody'], { exit: 1 }),
    ]);
    expect(again).toMatchObject({ customerId: 'acme', name: 'Acme Inc', created: false });
    expectError(renamed, 'CUSTOMER_EXISTS');
    // A control character in a name would break tables, CSV rows and log lines: refused, nothing created or renamed.
    expectError(await cli(['customers', 'create', 'ctl', '--name', 'a\nb'], { exit: 1 }), 'VALIDATION_ERROR');
    expectError(await cli(['customers', 'update', 'acme', '--name', 'Acme\u001b[2J'], { exit: 1 }), 'VALIDATION_ERROR');
    expectError(await cli(['customers', 'show', 'ctl'], { exit: 1 }), 'CUSTOMER_NOT_FOUND');
    expect(await cli(['customers', 'show', 'acme'])).toMatchObject({ name: 'Acme Inc' });
    expectError(nobody, 'CUSTOMER_NOT_FOUND');

    const t1 = await cli(['topup', 'acme', '10', '--key', 'invoice-1']);
    expect(t1).toMatchObject({ customerId: 'acme', amountUsd: '10.00', balanceUsd: '10.00', idempotencyKey: 'invoice-1', replayed: false });
    expect(t1.topupId).toMatch(/^ent_/);
    const [replay, conflict] = await Promise.all([
      cli(['topup', 'acme', '10', '--key', 'invoice-1']),
      // Same key, different request: refused, nothing changes.
      cli(['topup', 'acme', '11', '--key', 'invoice-1'], { exit: 1 }),
    ]);
    expect(replay).toMatchObject({ topupId: t1.topupId, amountUsd: '10.00', balanceUsd: '10.00', replayed: true });
    expectError(conflict, 'IDEMPOTENCY_CONFLICT');

    const t2 = await cli(['topup', 'acme', '$5.50']);
    expect(t2.idempotencyKey).toMatch(/^cli:topup:[0-9a-f-]{36}$/);
    expect(t2).toMatchObject({ amountUsd: '5.50', balanceUsd: '15.50' });

    const [list, show] = await Promise.all([cli(['customers', 'list']), cli(['customers', 'show', 'acme'])]);
    expect(list.customers).toEqual([
      { customerId: 'acme', name: 'Acme Inc', createdAt: created.createdAt, balanceUsd: '15.50', heldUsd: '0.00', availableUsd: '15.50' },
    ]);
    expect(show).toEqual(list.customers[0]);
  });

  it.sequential('customers update: renames, clears, refuses bad flags and unknown customers', async () => {
    await cli(['customers', 'create', 'rename-co', '--name', 'Old Name']);
    const [renamed, both, ghost] = await Promise.all([
      cli(['customers', 'update', 'rename-co', '--name', 'New Name']),
      cli(['customers', 'update', 'rename-co', '--name', 'X', '--clear-name'], { exit: 1 }),
      cli(['customers', 'update', 'ghost', '--name', 'X'], { exit: 1 }),
    ]);
    expect(renamed).toMatchObject({ customerId: 'rename-co', name: 'New Name' });
    expectError(both, 'VALIDATION_ERROR');
    expectError(ghost, 'CUSTOMER_NOT_FOUND');
    expect((await cli(['customers', 'update', 'rename-co', '--clear-name'])).name).toBeNull();
  });

  it.sequential('charge, refund, balance, statement, holds and audit', async () => {
    const ch = await cli(['charge', 'acme', 'Inference', '4', '--key', 'run-1:step-1']);
    expect(ch).toMatchObject({
      customerId: 'acme', chargeType: 'Inference', quantity: '4', unit: 'image', usd: '0.08', sparks: '80',
      balanceUsd: '15.42', rateCardVersion: '2026-12-default', idempotencyKey: 'run-1:step-1', replayed: false,
    });
    expect(ch.chargeId).toMatch(/^chg_/);
    chargeId = ch.chargeId;
    expect(await cli(['charge', 'acme', 'Inference', '4', '--key', 'run-1:step-1'])).toMatchObject({ chargeId, balanceUsd: '15.42', replayed: true });

    const paid = await cli(['charge', 'acme', 'PaidPublicFlowRun', '12']);
    expect(paid).toMatchObject({ usd: '3.15', quantity: '12', feeUsd: '3.15', creatorNetUsd: '8.85', balanceUsd: '12.27' });

    const r1 = await cli(['refund', chargeId, '0.05', '--key', 'refund-1']);
    expect(r1).toMatchObject({ chargeId, customerId: 'acme', amountUsd: '0.05', balanceUsd: '12.32', idempotencyKey: 'refund-1' });
    expect(r1.refundId).toMatch(/^ent_/);
    const [tooMuch, missing, balance, st, last2, sweep, audit, audit2] = await Promise.all([
      cli(['refund', chargeId, '1'], { exit: 1 }),
      cli(['refund', 'chg_doesnotexist'], { exit: 1 }),
      cli(['balance', 'acme']),
      cli(['statement', 'acme']),
      cli(['statement', 'acme', '--limit', '2']),
      cli(['holds', 'sweep']),
      cli(['audit', '--customer', 'acme']),
      cli(['audit', '--limit', '2']),
    ]);
    expectError(tooMuch, 'REFUND_EXCEEDS_CHARGE');
    expect(tooMuch.error.details).toMatchObject({ chargeId, requestedUsd: '1.00', refundableUsd: '0.03' });
    expectError(missing, 'CHARGE_NOT_FOUND');

    expect(balance).toEqual({ customerId: 'acme', balanceUsd: '12.32', heldUsd: '0.00', availableUsd: '12.32' });

    expect(st.customerId).toBe('acme');
    expect(st.entries.map((e: any) => e.type)).toEqual(['topup', 'topup', 'charge', 'charge', 'refund']);
    expect(st.entries.map((e: any) => e.amountUsd)).toEqual(['10.00', '5.50', '-0.08', '-3.15', '0.05']);
    for (const e of st.entries) {
      for (const k of ['amountUsd', 'heldDeltaUsd', 'balanceAfterUsd']) expect(e[k]).toMatch(USD);
      expect(e.actor).toBe('cli');
    }
    expect(st.entries[2]).toMatchObject({ chargeType: 'Inference', quantity: '4', rateCardVersion: '2026-12-default', idempotencyKey: 'run-1:step-1', chargeId });
    expect(last2.entries.map((e: any) => e.seq)).toEqual(st.entries.slice(-2).map((e: any) => e.seq));

    expect(sweep).toEqual({ expired: 0 });

    const ops = audit.records.map((r: any) => r.operation);
    expect(ops).toEqual(expect.arrayContaining(['createCustomer', 'topUp', 'charge', 'refund']));
    expect(audit.records.every((r: any) => r.actor === 'cli' && r.customerId === 'acme')).toBe(true);
    expect(audit2.records).toHaveLength(2);
  });

  it.sequential('insufficient funds: INSUFFICIENT_FUNDS with details, nothing charged', async () => {
    const before = await cli(['statement', 'acme']);
    const out = await cli(['charge', 'acme', 'Training', '1000'], { exit: 1 });
    expectError(out, 'INSUFFICIENT_FUNDS');
    expect(out.error.details).toMatchObject({ customerId: 'acme', requiredUsd: '60.00', availableUsd: '12.32' });
    expect(await cli(['statement', 'acme'])).toEqual(before);
  });

  it.sequential('bad input is a VALIDATION_ERROR and changes nothing', async () => {
    const before = await Promise.all([cli(['balance', 'acme']), cli(['statement', 'acme']), cli(['audit'])]);
    const cases: Array<[string[], number]> = [
      [['topup', 'acme', '-5'], 1],
      [['topup', 'acme', '1e3'], 1],
      [['topup', 'acme', 'NaN'], 1],
      [['topup', 'acme', 'Infinity'], 1],
      [['topup', 'acme', '0.0000000001'], 1],
      [['topup', 'acme', '0'], 1],
      [['topup', 'acme', '1,5'], 1],
      [['topup', 'bad id!', '5'], 1],
      [['charge', 'acme', 'Bogus', '1'], 1],
      [['charge', 'acme', 'Inference', '-1'], 1],
      [['charge', 'acme', 'Inference', '1e2'], 1],
      [['charge', 'acme', 'Inference', 'NaN'], 1],
      [['charge', 'acme', 'PaidPublicFlowRun', '12.0000000001'], 1],
      [['refund', chargeId, '-0.01'], 1],
      [['refund', chargeId, '1e-2'], 1],
      [['statement', 'acme', '--limit', '1e3'], 1],
      [['price', 'tokens', '1.5'], 1],
      [['price', 'Zipper', '50', '--model', 'gpt-4o'], 1],
      [['bogus-command'], 2],
      [['balance'], 2],
      [['balance', 'acme', '--bogus'], 2],
      [['balance', 'acme', 'extra'], 2],
    ];
    // Validation happens before the ledger is opened, so one backend runs the whole matrix and the other a sample.
    const picked = backend.name === 'sqlite' ? cases : cases.filter(([args]) => ['-5', 'Bogus', 'bogus-command'].some((a) => args.includes(a)));
    const outs = await Promise.all(picked.map(([args, exit]) => cli(args, { exit })));
    outs.forEach((o) => expectError(o, 'VALIDATION_ERROR'));

    const unknownType = outs.find((o) => o.error.message.includes('Bogus'))!;
    expect(unknownType.error.message).toContain('Valid ChargeTypes: Inference, ObjectGenerator');
    expect(outs[0]!.error.details.issues[0]).toMatchObject({ path: 'amount', value: '-5' });

    const after = await Promise.all([cli(['balance', 'acme']), cli(['statement', 'acme']), cli(['audit'])]);
    expect(after).toEqual(before);
  });

  it.sequential('rate cards: show, list, import --no-activate, activate; charges use the active card', async () => {
    const show = await cli(['ratecard', 'show']);
    expect(show).toMatchObject({ version: '2026-12-default', active: true });
    expect(show.document.chargeTypes.Zipper).toEqual({ unit: 'MB', per: 1, usd: '0.0035', fixedUsd: '0.01' });

    const file = path.join(tmp, `card-${backend.name}.json`);
    fs.writeFileSync(file, JSON.stringify(RATE_CARD_V2));
    expect(await cli(['ratecard', 'import', file, '--no-activate'])).toMatchObject({ version: 'cli-test-v2', active: false });
    const [list, priced] = await Promise.all([cli(['ratecard', 'list']), cli(['price', 'Inference', '1', '--version', 'cli-test-v2'])]);
    expect(list.rateCards.map((r: any) => [r.version, r.active])).toEqual([
      ['2026-12-default', true],
      ['cli-test-v2', false],
    ]);
    expect(priced).toMatchObject({ usd: '0.03', rateCardVersion: 'cli-test-v2' });
    expect(await cli(['ratecard', 'activate', 'cli-test-v2'])).toMatchObject({ version: 'cli-test-v2', active: true });
    const broken = path.join(tmp, `broken-${backend.name}.json`);
    fs.writeFileSync(broken, '{"version": "broken"}');
    const [charged, old, nope, invalid] = await Promise.all([
      cli(['charge', 'acme', 'Inference', '1']),
      cli(['ratecard', 'show', '--version', '2026-12-default']),
      cli(['ratecard', 'activate', 'nope'], { exit: 1 }),
      cli(['ratecard', 'import', broken], { exit: 1 }),
    ]);
    expect(charged).toMatchObject({ usd: '0.03', rateCardVersion: 'cli-test-v2' });
    expect(old.active).toBe(false);
    expectError(nope, 'RATE_CARD_NOT_FOUND');
    expectError(invalid, 'VALIDATION_ERROR');
    await cli(['ratecard', 'activate', '2026-12-default']);
  });

  it.sequential('takes the database from FLOWISE_BILLING_DB', async () => {
    const out = await json(['balance', 'acme'], { env: { FLOWISE_BILLING_DB: db } });
    expect(out).toEqual(await cli(['balance', 'acme']));
  });
});

describe.concurrent('CLI without a backend loop (SQLite)', () => {

  it('price: the worked examples, resources and model tokens, recording nothing', async () => {
    const db = path.join(tmp, 'price.sqlite');
    const p = (...args: string[]) => json(['--db', db, 'price', ...args]);
    const [inference, transform, training, zipper, paid, tokens, model, compute, storage] = await Promise.all([
      p('Inference', '4'),
      p('ObjectTransformer', '1'),
      p('Training', '120'),
      p('Zipper', '50'),
      p('PaidPublicFlowRun', '12'),
      p('tokens', '1000'),
      p('tokens', '1200', '--model', 'gpt-4o-mini-2024-07-18', '--output-tokens', '300'),
      p('compute', '1.5'),
      p('storage', '2'),
    ]);
    expect(inference).toEqual({ item: 'Inference', quantity: '4', unit: 'image', usd: '0.08', sparks: '80', rateCardVersion: '2026-12-default' });
    expect(transform).toMatchObject({ usd: '0.01', sparks: '10' });
    expect(training).toMatchObject({ usd: '7.20', quantity: '120', unit: 'minute' });
    expect(zipper).toMatchObject({ usd: '0.185', unit: 'MB' }); // DESIGN.md's "$0.195" contradicts its formula
    expect(paid).toMatchObject({ usd: '3.15', feeUsd: '3.15', creatorNetUsd: '8.85', runPriceUsd: '12.00' });
    expect(tokens).toMatchObject({ item: 'tokens', usd: '0.10', sparks: '100' });
    // gpt-4o-mini: $0.00015 in / $0.0006 out per 1K → 1200 in = $0.00018, 300 out = $0.00018.
    expect(model).toMatchObject({ item: 'tokens:gpt-4o-mini', model: 'gpt-4o-mini', usd: '0.00036', inputUsd: '0.00018', outputUsd: '0.00018', inputTokens: 1200, outputTokens: 300 });
    expect(compute).toMatchObject({ usd: '0.075', unit: 'minute' });
    expect(storage).toMatchObject({ usd: '1.00', unit: 'GB-month' });
    // Pricing and reads create nothing: there is still no ledger, and reads say so.
    expect(fs.existsSync(db)).toBe(false);
    expect((await json(['--db', db, 'ratecard', 'list'], { exit: 1 })).error.code).toBe('LEDGER_NOT_FOUND');
    expect((await json(['--db', db, 'audit'], { exit: 1 })).error.code).toBe('LEDGER_NOT_FOUND');
    expect(fs.existsSync(db)).toBe(false);
  });

  it('charge refuses a $0 charge (quantity 0, or too small to cost a nano-USD) with VALIDATION_ERROR and writes nothing', async () => {
    const db = path.join(tmp, 'zero.sqlite');
    await json(['--db', db, 'customers', 'create', 'zero']);
    await json(['--db', db, 'topup', 'zero', '5', '--key', 'zero-seed']);
    const before = await json(['--db', db, 'statement', 'zero']);
    for (const quantity of ['0', '0.000000001']) {
      const r = await json(['--db', db, 'charge', 'zero', 'Inference', quantity, '--key', `zero-${quantity}`], { exit: 1 });
      expectError(r, 'VALIDATION_ERROR');
      expect(r.error.message).toBe(`Inference × ${quantity} costs $0 at rate card 2026-12-default: a charge must be greater than zero`);
    }
    expect(await json(['--db', db, 'statement', 'zero'])).toEqual(before);
    // Nothing was kept under the key: the same key with a real quantity charges.
    expect(await json(['--db', db, 'charge', 'zero', 'Inference', '1', '--key', 'zero-0'])).toMatchObject({ usd: '0.02', replayed: false });
  });

  it('human output: aligned statement, one-line errors on stderr, no stack traces', async () => {
    const db = path.join(tmp, 'human.sqlite');
    await json(['--db', db, 'customers', 'create', 'human']);
    await json(['--db', db, 'topup', 'human', '100', '--key', 'k-1']);
    await json(['--db', db, 'charge', 'human', 'ObjectGenerator', '12345']);
    await json(['--db', db, 'charge', 'human', 'Training', '120']);

    const r = await run(['--db', db, 'statement', 'human']);
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    const h = lines.findIndex((l) => l.startsWith('seq'));
    expect(h).toBeGreaterThanOrEqual(0);
    const rule = lines[h + 1]!;
    const starts = [...rule.matchAll(/-+/g)].map((m) => m.index!);
    const ends = [...rule.matchAll(/-+/g)].map((m) => m.index! + m[0].length);
    expect(starts).toHaveLength(10);
    const header = lines[h]!;
    for (const name of ['time (UTC)', 'type', 'charge type', 'charge id', 'key']) expect(starts).toContain(header.indexOf(name));
    const rows = lines.slice(h + 2, h + 5);
    expect(rows).toHaveLength(3);
    for (const row of rows) {
      for (const s of starts.slice(1)) expect(row.slice(s - 2, s), row).toBe('  ');
      // Right-aligned money columns (amount, held Δ, balance after) end on the rule's last dash.
      for (const i of [3, 4, 5]) expect(row[ends[i]! - 1], row).not.toBe(' ');
    }
    expect(rows[0]).toContain('+$100.00');
    expect(rows[1]).toContain('-$0.308625');
    expect(rows[2]).toContain('$92.491375');
    expect(r.stdout).toContain('available  $92.491375');

    const bad = await run(['--db', db, 'topup', 'human', '1e3']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toBe('');
    expect(bad.stderr).toMatch(/^error\[VALIDATION_ERROR\]: .*1e3.*\n$/);
    const broke = await run(['--db', db, 'charge', 'human', 'Training', '100000']);
    expect(broke.code).toBe(1);
    expect(broke.stderr).toBe('error[INSUFFICIENT_FUNDS]: Insufficient funds for customer human: required $6000.00, available $92.491375\n');
    const usage = await run(['--db', db, 'nope']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^error\[VALIDATION_ERROR\]: unknown command 'nope'.*\n$/);
    for (const x of [bad, broke, usage]) expect(x.stderr).not.toMatch(/\n\s+at /);

    const help = await run(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('statement');
  });

  it('never echoes a password given as ?password= in a postgres URL (the pg driver honours it)', async () => {
    const db = 'postgres://user@127.0.0.1:1/x?password=s3cr3t-qp&sslpassword=s3cr3t-ssl';
    for (const args of [['--db', db, 'balance', 'acme'], ['--db', db, 'balance', 'acme', '--json']]) {
      const r = await run(args);
      expect(r.code).toBe(1);
      expect(r.stdout + r.stderr).toContain('DATABASE_ERROR');
      expect(r.stdout + r.stderr).toContain('127.0.0.1:1/x?password=***');
      expect(r.stdout + r.stderr).not.toMatch(/s3cr3t/);
    }
  });

  it('demo: names the CLI as the reader can type it again', () => {
    expect(cliCommand('/usr/local/bin/flowise-billing')).toBe('flowise-billing');
    expect(cliCommand('/srv/app/node_modules/.bin/flowise-billing')).toBe('flowise-billing');
    expect(cliCommand(CLI_MAIN)).toBe('npx flowise-billing');
  });

  it('the build leaves the bin executable, as the printed npx command needs', () => {
    // npx marks it only when it first links this project into its cache; a later clone at the same path, or a
    // rebuild, found the cached link and a file tsc had written without the mode: "Permission denied".
    expect(fs.statSync(MAIN).mode & 0o111).toBe(0o111);
    expect(fs.readFileSync(MAIN, 'utf8').startsWith('#!/usr/bin/env node\n')).toBe(true);
  });

  it('demo: runs the story to INSUFFICIENT_FUNDS on a fresh temporary ledger', async () => {
    const human = await run(['demo']);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr).toBe('');
    expect(human.stdout).toContain('error[INSUFFICIENT_FUNDS]');
    expect(human.stdout).toContain('REFUSED error[QUOTA_EXCEEDED]');
    expect(human.stdout).toContain('$0.185');
    expect(human.stdout).toContain('$0.195'); // the DESIGN.md discrepancy is called out
    expect(human.stdout).toMatch(/creator nets\s+\$8\.85/);
    expect(human.stdout).not.toContain('MISMATCH');
    const location = /ledger\s+sqlite at (\S+)/.exec(human.stdout)?.[1];
    expect(location && location.startsWith(os.tmpdir())).toBe(true);
    // The footer's commands run as printed: started as `node dist/…/main.js` (npm run demo in a clone, where no
    // flowise-billing is on the PATH), they go through npx.
    const again = human.stdout.split('\n').filter((l) => l.includes(' --db ')).map((l) => l.trim());
    expect(again).toHaveLength(2);
    expect(again[0]).toMatch(/^npx flowise-billing --db \S+ statement demo-acme$/);
    const statement = execSync(again[0]!, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, MODE: '' } });
    expect(statement).toMatch(/balance\s+\$0\.125/);
    fs.rmSync(path.dirname(location!), { recursive: true, force: true });

    const demoDb = path.join(tmp, 'demo.sqlite');
    const out = await json(['demo', '--db', demoDb]);
    expect(out).toMatchObject({ demo: 'completed', backend: 'sqlite', location: demoDb, customerId: 'demo-acme' });
    expect(out.stoppedBy).toMatchObject({ code: 'INSUFFICIENT_FUNDS', details: { customerId: 'demo-acme', requiredUsd: '0.25', availableUsd: '0.125' } });
    const examples = out.steps.find((s: any) => s.id === 'worked-examples').examples;
    expect(examples.map((e: any) => [e.chargeType, e.usd, e.matches])).toEqual([
      ['Inference', '0.08', true],
      ['ObjectTransformer', '0.01', true],
      ['Training', '7.20', true],
      ['Zipper', '0.185', true],
    ]);
    expect(out.steps.find((s: any) => s.id === 'metered-runs')).toMatchObject({ customerId: 'demo-acme-chat', runs: 4, stoppedBy: 'INSUFFICIENT_FUNDS' });
    expect(out.steps.find((s: any) => s.id === 'paid-public-run')).toMatchObject({ feeUsd: '3.15', creatorNetUsd: '8.85', matches: true });
    // The Free tier's 25 sessions run out; an upgrade lifts the limit at once.
    expect(out.steps.find((s: any) => s.id === 'session-quota')).toMatchObject({
      sessionsLimit: 25,
      sessionsUsed: 25,
      refused: { code: 'QUOTA_EXCEEDED' },
      ongoingSession: 'existing',
      upgrade: 'upgrade',
      afterUpgrade: { tier: 'starter', session: 'new', sessionsUsed: 26, sessionsLimit: 1000 },
    });
    expect(out.final).toMatchObject({ balanceUsd: '0.125', availableUsd: '0.125' });
    expect(out.final.entries.at(-1).balanceAfterUsd).toBe('0.125');
    // A second run on the same ledger uses a fresh customer and tells the same story.
    expect(await json(['demo', '--db', demoDb])).toMatchObject({ customerId: 'demo-acme-2', final: { balanceUsd: '0.125' } });
  });
});
