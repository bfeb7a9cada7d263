import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli/program';
import { addExamples, EXAMPLES } from '../src/cli/examples';
import { openLedger } from '../src/ledger/open';
import { CLI_MAIN, runCli, runJson } from './support/cli-run';
import { PG_BASE_URL } from './support/backends';
import { fakeFlowise } from './support/fake-flowise';
import { BUNDLE_REL } from '../src/installer';

/**
 * The CLI as an operator meets it: honest --db, reads that create nothing,
 * formats, pipes, --version, token sign, doctor. Real subprocesses, real
 * SQLite files, the shared PostgreSQL.
 */

const ROOT = path.resolve(__dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-cli-pkg-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const SECRET = 'correct-horse-battery-staple-0123456789abcdef';

describe('--db is honest', () => {
  it('refuses unknown schemes and creates nothing', async () => {
    const r = await runJson(['--db', 'mysql://x', 'balance', 'acme'], { cwd: tmp });
    expect(r.code).toBe(1);
    expect(r.value.error.code).toBe('VALIDATION_ERROR');
    expect(r.value.error.message).toMatch(/scheme "mysql:\/\/"/);
    expect(fs.readdirSync(tmp)).toEqual([]);
    const w = await runJson(['--db', 'mysql://x', 'customers', 'create', 'acme'], { cwd: tmp });
    expect(w.value.error.code).toBe('VALIDATION_ERROR');
    expect(fs.readdirSync(tmp)).toEqual([]);
  });

  it('never shows a URL or password in an error, from the CLI or the library', async () => {
    for (const db of ['postgres://user:s3cr3tpw@host:99999/x', 'postgres://user:s3cr3tpw@127.0.0.1:5432/x?schema=Bad-Name', 'postgresql://user:s3cr3tpw@[bad/x']) {
      const r = await runCli(['--db', db, 'balance', 'acme']);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error\[VALIDATION_ERROR\]: /);
      expect(r.stderr + r.stdout).not.toContain('s3cr3tpw');
      expect(r.stderr).not.toContain('@host');
      const j = await runJson(['--db', db, 'balance', 'acme']);
      expect(JSON.stringify(j.value)).not.toContain('s3cr3tpw');
      const e = await openLedger(db).then(
        () => null,
        (err: unknown) => err as Error & { code?: string },
      );
      expect(e?.code).toBe('VALIDATION_ERROR');
      expect(`${e?.message} ${JSON.stringify(e)}`).not.toContain('s3cr3tpw');
    }
  });

  it('reads on SQLite create no file or directory and say "no ledger at"', async () => {
    const dir = path.join(tmp, 'nonexistent', 'dir');
    const db = path.join(dir, 'x.sqlite');
    for (const args of [['balance', 'acme'], ['statement', 'acme'], ['audit'], ['customers', 'list'], ['ratecard', 'list'], ['usage', 'acme'], ['plans', 'list']]) {
      const r = await runCli(['--db', db, ...args]);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr).toContain(`error[LEDGER_NOT_FOUND]: No ledger at ${db}`);
    }
    expect(fs.existsSync(path.join(tmp, 'nonexistent'))).toBe(false);
    // A file that is not a ledger is refused too, and left as it was.
    const other = path.join(tmp, 'other.sqlite');
    fs.writeFileSync(other, '');
    expect((await runJson(['--db', other, 'balance', 'acme'])).value.error.code).toBe('LEDGER_NOT_FOUND');
    expect(fs.statSync(other).size).toBe(0);
    // A write creates it; then reads work.
    expect((await runJson(['--db', db, 'customers', 'create', 'acme'])).code).toBe(0);
    expect((await runJson(['--db', db, 'balance', 'acme'])).value).toMatchObject({ customerId: 'acme', balanceUsd: '0.00' });
  });

  it('reads on PostgreSQL create no schema or table', async () => {
    const schema = `t_${process.env.FB_TEST_RUN ?? 'x'}_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
    const db = `${PG_BASE_URL}?schema=${schema}`;
    const r = await runJson(['--db', db, 'balance', 'acme']);
    expect(r.value.error.code).toBe('LEDGER_NOT_FOUND');
    expect(r.value.error.message).toContain(`(schema ${schema})`);
    const c = new Client({ connectionString: PG_BASE_URL });
    await c.connect();
    try {
      expect((await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount).toBe(0);
      expect((await runJson(['--db', db, 'migrate'])).code).toBe(0);
      expect((await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema])).rowCount).toBe(1);
      expect((await runJson(['--db', db, 'customers', 'list'])).value).toEqual({ customers: [] });
    } finally {
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    }
  });
});

describe('a good Unix tool', () => {
  it('survives a closed pipe and prints its version', () => {
    const piped = spawnSync('bash', ['-c', `set -o pipefail; node ${JSON.stringify(CLI_MAIN)} --help | head -1`], { encoding: 'utf8' });
    expect(piped.stderr).toBe('');
    expect(piped.status).toBe(0);
    expect(piped.stdout).toMatch(/^Usage: flowise-billing/);
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const v = spawnSync(process.execPath, [CLI_MAIN, flag], { encoding: 'utf8' });
      expect(v.stdout.trim()).toBe(pkg.version);
      expect(v.status).toBe(0);
    }
  });

  it('every command has examples in its --help', async () => {
    const { program } = buildProgram({ out: () => undefined, err: () => undefined, env: {} }, false);
    // buildProgram already added them; a second pass only reports what is missing.
    expect(addExamples(program)).toEqual([]);
    const help = await runCli(['customers', 'create', '--help']);
    expect(help.stdout).toContain(`Examples:\n  ${EXAMPLES['customers create']![0]}`);
  });

  it('statements show charge ids, fit the terminal, and come as csv/tsv; --limit is the newest n everywhere', async () => {
    const db = path.join(tmp, 'fmt.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme', '--name', 'Acme, "Inc"']);
    await runJson(['--db', db, 'topup', 'acme', '100', '--key', 'fmt-topup']);
    const charges: string[] = [];
    for (const n of ['1', '2', '3']) charges.push((await runJson(['--db', db, 'charge', 'acme', 'Inference', n, '--key', `fmt-${n}`])).value.chargeId);

    const csv = await runCli(['--db', db, 'statement', 'acme', '--format', 'csv']);
    expect(csv.code).toBe(0);
    const rows = csv.stdout.trimEnd().split('\n');
    const header = rows[0]!.split(',');
    expect(header).toContain('charge id');
    const col = header.indexOf('charge id');
    expect(rows.slice(1).map((r) => r.split(',')[col]).filter(Boolean)).toEqual(charges);
    // The id from the statement is what refund takes.
    expect((await runJson(['--db', db, 'refund', charges[0]!, '0.01'])).code).toBe(0);

    const tsv = await runCli(['--db', db, 'customers', 'list', '--format', 'tsv']);
    expect(tsv.stdout.split('\n')[1]!.split('\t').slice(0, 2)).toEqual(['acme', 'Acme, "Inc"']);
    const csvCustomers = await runCli(['--db', db, '--format=csv', 'customers', 'list']);
    expect(csvCustomers.stdout.split('\n')[1]).toContain('"Acme, ""Inc"""');

    const wide = await runCli(['--db', db, 'statement', 'acme']);
    const narrow = await runCli(['--db', db, 'statement', 'acme'], { env: { COLUMNS: '100' } });
    expect(Math.max(...wide.stdout.split('\n').map((l) => [...l].length))).toBeGreaterThan(100);
    for (const line of narrow.stdout.split('\n')) expect([...line].length, line).toBeLessThanOrEqual(100);
    expect(narrow.stdout).toContain('…');
    // Ids to copy and amounts are never shortened; the idempotency key column is the first to go.
    for (const id of charges) expect(narrow.stdout).toContain(id);
    expect(narrow.stdout).toContain('+$100.00');
    expect(narrow.stdout).not.toContain('fmt-topup');
    expect(wide.stdout).toContain('fmt-topup');

    const all = (await runJson(['--db', db, 'statement', 'acme'])).value.entries.map((e: any) => e.seq);
    expect((await runJson(['--db', db, 'statement', 'acme', '--limit', '2'])).value.entries.map((e: any) => e.seq)).toEqual(all.slice(-2));
    const audit = (await runJson(['--db', db, 'audit'])).value.records.map((r: any) => r.seq);
    expect(audit.length).toBeGreaterThan(3);
    expect((await runJson(['--db', db, 'audit', '--limit', '2'])).value.records.map((r: any) => r.seq)).toEqual(audit.slice(-2));
  });

  it('usage --period takes the same YYYY-MM / YYYY-MM-DD spellings as stripe reconcile, and the plan decides "near limit"', async () => {
    const db = path.join(tmp, 'usage.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    await runJson(['--db', db, 'plans', 'create', 'tiny', '--name', 'Tiny', '--base-usd', '0', '--sessions', '10', '--byok', '--alerts', '50,90']);
    await runJson(['--db', db, 'subscribe', 'acme', 'tiny']);
    for (const chat of ['c1', 'c2', 'c3', 'c4']) await runJson(['--db', db, 'sessions', 'touch', 'acme', chat]);
    const today = new Date().toISOString().slice(0, 10);
    const at40 = (await runJson(['--db', db, 'usage', 'acme', '--period', today])).value;
    expect(at40).toMatchObject({ sessionsUsed: 4, isNearLimit: false, nearLimitThreshold: 50 });
    await runJson(['--db', db, 'sessions', 'touch', 'acme', 'c5']);
    expect((await runJson(['--db', db, 'usage', 'acme'])).value).toMatchObject({ sessionsUsed: 5, isNearLimit: true });
    // YYYY-MM is the period containing that month's first day.
    const month = (await runJson(['--db', db, 'usage', 'acme', '--period', today.slice(0, 7)])).value;
    expect(Date.parse(month.periodStart)).toBeLessThanOrEqual(Date.parse(`${today.slice(0, 7)}-01T00:00:00Z`));
    expect(Date.parse(month.periodEnd)).toBeGreaterThan(Date.parse(`${today.slice(0, 7)}-01T00:00:00Z`));
    const bad = await runJson(['--db', db, 'usage', 'acme', '--period', '2026-13']);
    expect(bad.value.error.code).toBe('VALIDATION_ERROR');
    expect(bad.value.error.message).toContain('YYYY-MM, YYYY-MM-DD or an ISO time');
  });

  it('token sign refuses customers the ledger does not know, unless --allow-unknown', async () => {
    const db = path.join(tmp, 'token.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const env = { FLOWISE_BILLING_TOKEN_SECRET: SECRET };
    const ok = await runJson(['--db', db, 'token', 'sign', 'acme'], { env });
    expect(ok.value.customerId).toBe('acme');
    const unknown = await runJson(['--db', db, 'token', 'sign', 'ghost'], { env });
    expect(unknown.code).toBe(1);
    expect(unknown.value.error.code).toBe('CUSTOMER_NOT_FOUND');
    const allowed = await runJson(['--db', db, 'token', 'sign', 'ghost', '--allow-unknown'], { env });
    expect(allowed.value.customerId).toBe('ghost');
    const verified = (await runJson(['--db', db, 'token', 'verify', allowed.value.token], { env })).value;
    expect(verified.customerId).toBe('ghost');
    // sign's expiresAt is the token's exp, the instant verify reports (a JWT has whole seconds).
    expect(allowed.value.expiresAt).toBe(verified.expiresAt);
  });
});

describe('doctor', () => {
  it('exits 1 with a fix for each problem: no Flowise, short secret, malformed Stripe key; no ledger yet is not one of them', async () => {
    const db = path.join(tmp, 'doctor', 'none.sqlite');
    const env = { FLOWISE_BILLING_TOKEN_SECRET: 'short', STRIPE_SECRET_KEY: 'pk_test_123' };
    const r = await runJson(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')], { env });
    expect(r.code).toBe(1);
    expect(r.value.error.code).toBe('PROBLEMS_FOUND');
    const problems = r.value.error.details.problems as Array<{ code: string; message: string; fix: string }>;
    expect(problems.map((p) => p.code)).toEqual(['FLOWISE_NOT_FOUND', 'TOKEN_SECRET_TOO_SHORT', 'STRIPE_KEY_MALFORMED']);
    for (const p of problems) {
      expect(p.fix.length).toBeGreaterThan(20);
      expect(p.fix).not.toBe(p.message);
    }
    expect(r.value.error.details.checks[0]).toEqual({ name: 'ledger', status: 'not created', detail: expect.stringContaining(`no ledger at ${db} yet: the first write creates it`) });
    expect(fs.existsSync(path.join(tmp, 'doctor'))).toBe(false);
    const human = await runCli(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')], { env });
    expect(human.code).toBe(1);
    expect(human.stdout).toMatch(/problem TOKEN_SECRET_TOO_SHORT: .*\n {2}fix: generate one with/);
    expect(human.stderr).toMatch(/^error\[PROBLEMS_FOUND\]: doctor found 3 problem\(s\)/);
  });

  it.skipIf(!fs.existsSync(path.join(ROOT, BUNDLE_REL, 'engine', 'index.js')))('on a fresh install (plugin installed, no ledger yet) reports the missing ledger as information and exits 0', async () => {
    const flowise = fakeFlowise();
    try {
      expect((await runJson(['install', '--flowise', flowise.dir])).code).toBe(0);
      const db = path.join(tmp, 'fresh', 'billing.sqlite');
      const env = { FLOWISE_BILLING_TOKEN_SECRET: SECRET };
      const r = await runJson(['--db', db, 'doctor', '--flowise', flowise.dir], { env });
      expect(r.code, JSON.stringify(r.value)).toBe(0);
      expect(r.value).toMatchObject({ ok: true, problems: [] });
      expect(r.value.checks[0]).toEqual({ name: 'ledger', status: 'not created', detail: expect.stringContaining(`no ledger at ${db} yet`) });
      const human = await runCli(['--db', db, 'doctor', '--flowise', flowise.dir], { env });
      expect(human.code).toBe(0);
      expect(human.stdout).toMatch(/ledger +not created: no ledger at .* yet: the first write creates it/);
      expect(human.stdout).toContain('No problems found.');
      // Nothing was created, and a PostgreSQL schema without the ledger tables is the same fresh install.
      expect(fs.existsSync(path.join(tmp, 'fresh'))).toBe(false);
      const schema = `t_${process.env.FB_TEST_RUN}_doctor_${randomUUID().replace(/-/g, '').slice(0, 8)}`;
      const pg = await runJson(['--db', `${PG_BASE_URL}?schema=${schema}`, 'doctor', '--flowise', flowise.dir], { env });
      expect(pg.code, JSON.stringify(pg.value)).toBe(0);
      expect(pg.value.checks[0]).toMatchObject({ name: 'ledger', status: 'not created' });
      // Still problems: the first write could not create it, or SQLite under MODE=queue.
      const file = path.join(tmp, 'fresh-file');
      fs.writeFileSync(file, 'not a folder');
      const blocked = await runJson(['--db', path.join(file, 'billing.sqlite'), 'doctor', '--flowise', flowise.dir], { env });
      expect(blocked.code).toBe(1);
      expect(blocked.value.error.details.problems).toEqual([expect.objectContaining({ code: 'LEDGER_NOT_CREATABLE', message: expect.stringContaining(file) })]);
      const queue = await runJson(['--db', db, 'doctor', '--flowise', flowise.dir], { env: { ...env, MODE: 'queue' } });
      expect(queue.code).toBe(1);
      expect(queue.value.error.details.problems.map((p: any) => p.code)).toEqual(['SQLITE_IN_QUEUE_MODE']);
    } finally {
      fs.rmSync(flowise.dir, { recursive: true, force: true });
    }
  });

  it('a file that is not a ledger is still a problem', async () => {
    const file = path.join(tmp, 'doctor-not-a-ledger.sqlite');
    fs.writeFileSync(file, '');
    const r = await runJson(['--db', file, 'doctor', '--flowise', path.join(tmp, 'no-flowise')]);
    expect(r.value.error.details.problems.map((p: any) => p.code)).toEqual(['FLOWISE_NOT_FOUND', 'LEDGER_NOT_FOUND']);
    expect(r.value.error.details.checks[0]).toMatchObject({ name: 'ledger', status: 'problem' });
  });

  it('reports a reachable ledger, a long secret and a well-formed key as fine', async () => {
    const db = path.join(tmp, 'doctor-ok.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const env = { FLOWISE_BILLING_TOKEN_SECRET: SECRET, STRIPE_SECRET_KEY: 'sk_test_abcdefghijklmnop' };
    const r = await runJson(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')], { env });
    expect(r.value.error.details.problems.map((p: any) => p.code)).toEqual(['FLOWISE_NOT_FOUND']);
    expect(r.value.error.details.checks).toEqual([
      { name: 'ledger', status: 'ok', detail: expect.stringContaining('1 customer(s), WAL checkpoint inline') },
      { name: 'token secret', status: 'ok', detail: `${SECRET.length} bytes` },
      { name: 'stripe key', status: 'ok', detail: expect.stringContaining('well-formed') },
    ]);
    const background = await runJson(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')], { env: { ...env, FLOWISE_BILLING_SQLITE_CHECKPOINT: 'background' } });
    expect(background.value.error.details.checks[0].detail).toContain('WAL checkpoint background');
  });

  it('names a SQLite ledger under MODE=queue as a problem: workers elsewhere would each have their own file', async () => {
    const db = path.join(tmp, 'doctor-queue.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const r = await runJson(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')], { env: { MODE: 'queue' } });
    const problem = r.value.error.details.problems.find((p: any) => p.code === 'SQLITE_IN_QUEUE_MODE');
    expect(problem.message).toContain(db);
    expect(problem.fix).toContain('FLOWISE_BILLING_DB=postgres://');
    expect(r.value.error.details.checks[0]).toMatchObject({ name: 'ledger', status: 'problem' });
    // Not in queue mode, the same ledger is fine.
    const plain = await runJson(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')]);
    expect(plain.value.error.details.problems.map((p: any) => p.code)).toEqual(['FLOWISE_NOT_FOUND']);
  });

  it('names a bad SQLite checkpoint setting as the problem, with its own fix', async () => {
    const db = path.join(tmp, 'doctor-mode.sqlite');
    await runJson(['--db', db, 'customers', 'create', 'acme']);
    const r = await runJson(['--db', db, 'doctor', '--flowise', path.join(tmp, 'no-flowise')], { env: { FLOWISE_BILLING_SQLITE_CHECKPOINT: 'sometimes' } });
    const problem = r.value.error.details.problems.find((p: any) => p.code === 'VALIDATION_ERROR');
    expect(problem.message).toContain('FLOWISE_BILLING_SQLITE_CHECKPOINT');
    expect(problem.fix).toContain('environment variable');
  });
});
