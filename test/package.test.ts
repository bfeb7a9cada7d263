import { execFileSync, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PG_BASE_URL } from './support/backends';
import { FLOWISE_NODE } from './support/flowise-cache';

/**
 * The package as an operator gets it: `npm pack`, then `npm install <tgz>` in
 * an empty project that has only the declared dependencies (better-sqlite3,
 * an optional native build, left out as where no compiler exists). Each entry
 * point loads there; the root loads no LangChain, Stripe or Langfuse code; the
 * packed CLI runs and installs into a Flowise-shaped tree. Needs the build
 * (`npm test` builds first) and the npm registry.
 */

const ROOT = path.resolve(__dirname, '..');
const built = fs.existsSync(path.join(ROOT, 'dist', 'flowise', 'engine', 'index.js')) && fs.existsSync(path.join(ROOT, 'dist', 'src', 'index.js'));
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, unknown>;
  devDependencies: Record<string, string>;
  files: string[];
};
const node24 = FLOWISE_NODE;

let tmp = '';
let project = '';
let tarball = '';
const npm = (args: string[], cwd: string) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 });
const nodeIn = (cwd: string, code: string, bin = process.execPath) => spawnSync(bin, ['-e', code], { cwd, encoding: 'utf8', timeout: 60_000 });

describe.skipIf(!built)('the packed package in a clean project', () => {
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-pack-'));
    // --ignore-scripts: `prepare` would rebuild; the test runs on this build.
    const packed = JSON.parse(npm(['pack', '--json', '--ignore-scripts', '--pack-destination', tmp], ROOT)) as Array<{ filename: string; files: Array<{ path: string }> }>;
    tarball = path.join(tmp, packed[0]!.filename);
    fs.writeFileSync(path.join(tmp, 'files.json'), JSON.stringify(packed[0]!.files.map((f) => f.path)));
    project = path.join(tmp, 'app');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }));
    npm(['install', '--no-audit', '--no-fund', '--omit=optional', tarball], project);
  }, 300_000);
  afterAll(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('ships the build, the bundle, the rate cards, README and LICENSE, and no tests or sources', () => {
    const files = JSON.parse(fs.readFileSync(path.join(tmp, 'files.json'), 'utf8')) as string[];
    for (const f of ['LICENSE', 'README.md', 'package.json', 'dist/src/index.js', 'dist/src/cli/main.js', 'dist/flowise/engine/index.js', 'ratecards/default.json']) expect(files).toContain(f);
    expect(files.filter((f) => /^(src|test|nodes|credentials)\//.test(f) || f.startsWith('dist/test/'))).toEqual([]);
    const license = fs.readFileSync(path.join(project, 'node_modules', 'flowise-billing', 'LICENSE'), 'utf8');
    expect(license).toMatch(/^MIT License/);
    expect(license).toContain('flowise-billing contributors');
  });

  it('installs only runtime dependencies: no @types, no LangChain, no better-sqlite3 when optional ones are omitted', () => {
    const nm = path.join(project, 'node_modules');
    expect(fs.existsSync(path.join(nm, '@types', 'jsonwebtoken'))).toBe(false);
    expect(fs.existsSync(path.join(nm, '@langchain'))).toBe(false);
    expect(fs.existsSync(path.join(nm, 'better-sqlite3'))).toBe(false);
    for (const dep of ['zod', 'jsonwebtoken', 'commander', 'pg']) expect(fs.existsSync(path.join(nm, dep, 'package.json')), dep).toBe(true);
  });

  it('the root signs tokens and tops up (PostgreSQL) without loading LangChain, Stripe or Langfuse', () => {
    const schema = `t_${process.env.FB_TEST_RUN ?? 'pack'}_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
    const r = nodeIn(
      project,
      `
      (async () => {
        const fb = require('flowise-billing');
        const token = fb.signBillingToken('x'.repeat(32), 'acme', { ttlSeconds: 60 });
        const who = fb.verifyBillingToken(token, 'x'.repeat(32)).customerId;
        const ledger = await fb.openLedger(${JSON.stringify(`${PG_BASE_URL}?schema=${schema}`)});
        await ledger.createCustomer({ id: 'acme' });
        await ledger.topUp({ customerId: 'acme', amount: fb.parseUsd('10'), idempotencyKey: 't1' });
        const b = await ledger.balance('acme');
        await ledger.close();
        const loaded = Object.keys(require.cache).filter((f) => /node_modules[\\\\/](@langchain|stripe|langfuse|langfuse-core)[\\\\/]/.test(f));
        process.stdout.write(JSON.stringify({ who, balance: fb.formatUsd(b.balance), loaded, exports: Object.keys(fb).length }));
      })().catch((e) => { console.error(e); process.exit(1); });`,
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ who: 'acme', balance: '10.00', loaded: [] });
  });

  it('every entry point loads; deep imports of internals (demo, fake model) are closed', () => {
    const r = nodeIn(
      project,
      `
      const out = {};
      for (const e of ['flowise-billing', 'flowise-billing/ledger', 'flowise-billing/identity', 'flowise-billing/stripe', 'flowise-billing/installer', 'flowise-billing/package.json']) {
        out[e] = Object.keys(require(e)).length;
      }
      for (const e of ['flowise-billing/langchain', 'flowise-billing/flowise', 'flowise-billing/dist/src/metering/fake-model', 'flowise-billing/dist/src/metering/demo']) {
        try { require(e); out[e] = 'loaded'; } catch (err) { out[e] = err.code; }
      }
      out.stripeHasCheckout = typeof require('flowise-billing/stripe').createTopUpCheckout;
      out.ledgerHasOpen = typeof require('flowise-billing/ledger').openLedger;
      out.identityHasSign = typeof require('flowise-billing/identity').signBillingToken;
      process.stdout.write(JSON.stringify(out));`,
    );
    expect(r.stderr).toBe('');
    const out = JSON.parse(r.stdout);
    for (const e of ['flowise-billing', 'flowise-billing/ledger', 'flowise-billing/identity', 'flowise-billing/stripe', 'flowise-billing/installer']) expect(out[e], e).toBeGreaterThan(3);
    // Without the optional peer @langchain/core, the LangChain entry points say so; the rest is unaffected.
    expect(out['flowise-billing/langchain']).toBe('MODULE_NOT_FOUND');
    expect(out['flowise-billing/flowise']).toBe('MODULE_NOT_FOUND');
    expect(out['flowise-billing/dist/src/metering/fake-model']).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
    expect(out['flowise-billing/dist/src/metering/demo']).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
    expect(out).toMatchObject({ stripeHasCheckout: 'function', ledgerHasOpen: 'function', identityHasSign: 'function' });
    // Every key of the exports map is one of those.
    expect(Object.keys(pkg.exports).sort()).toEqual(['.', './flowise', './identity', './installer', './langchain', './ledger', './package.json', './ratecards/*', './stripe'].sort());
  });

  it('the packed CLI runs without LangChain and installs the bundle into a Flowise-shaped tree', () => {
    const bin = path.join(project, 'node_modules', '.bin', 'flowise-billing');
    const v = spawnSync(bin, ['--version'], { cwd: project, encoding: 'utf8' });
    expect(v.stdout.trim()).toBe(pkg.version);
    const price = spawnSync(bin, ['price', 'Training', '120', '--json'], { cwd: project, encoding: 'utf8', env: { ...process.env, FLOWISE_BILLING_DB: path.join(project, 'none.sqlite') } });
    expect(JSON.parse(price.stdout)).toMatchObject({ usd: '7.20' });
    const fc = path.join(tmp, 'flowise', 'node_modules', 'flowise-components');
    fs.mkdirSync(path.join(fc, 'dist', 'nodes'), { recursive: true });
    fs.mkdirSync(path.join(fc, 'dist', 'credentials'), { recursive: true });
    fs.writeFileSync(path.join(fc, 'package.json'), JSON.stringify({ name: 'flowise-components', version: '3.1.4' }));
    const inst = spawnSync(bin, ['install', '--flowise', path.join(tmp, 'flowise'), '--json'], { cwd: project, encoding: 'utf8' });
    expect(inst.stderr).toBe('');
    const r = JSON.parse(inst.stdout);
    expect(r).toMatchObject({ ok: true, action: 'installed', componentsVersion: '3.1.4' });
    expect(r.files).toBeLessThanOrEqual(25);
    const creds = nodeIn(project, `process.stdout.write(require(${JSON.stringify(path.join(fc, 'dist/credentials/billing/BillingLedger.credential.js'))}).credClass.name)`);
    expect(creds.stdout).toBe('BillingLedgerCredential');
    const un = spawnSync(bin, ['uninstall', '--flowise', path.join(tmp, 'flowise'), '--json'], { cwd: project, encoding: 'utf8' });
    expect(JSON.parse(un.stdout)).toMatchObject({ wasInstalled: true, removed: r.files });
  });

  it.skipIf(!fs.existsSync(node24))('without better-sqlite3, SQLite ledgers use node:sqlite (Node 24)', () => {
    const r = nodeIn(
      project,
      `
      (async () => {
        const fb = require('flowise-billing');
        const ledger = await fb.openLedger(require('path').join(${JSON.stringify(tmp)}, 'n24.sqlite'));
        await ledger.createCustomer({ id: 'acme' });
        await ledger.topUp({ customerId: 'acme', amount: fb.parseUsd('0.000025'), idempotencyKey: 't1' });
        const b = await ledger.balance('acme');
        await ledger.close();
        process.stdout.write(JSON.stringify({ balance: fb.formatUsd(b.balance), node: process.versions.node }));
      })().catch((e) => { console.error(e.message); process.exit(1); });`,
      node24,
    );
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toMatchObject({ balance: '0.000025', node: expect.stringMatching(/^24\./) });
  });

  it('with the optional peer @langchain/core added, /langchain and /flowise load', () => {
    npm(['install', '--no-audit', '--no-fund', '--omit=optional', `@langchain/core@${pkg.devDependencies['@langchain/core']}`], project);
    const r = nodeIn(project, `const l = require('flowise-billing/langchain'); const f = require('flowise-billing/flowise'); process.stdout.write(JSON.stringify({ handler: typeof l.BillingCallbackHandler, guard: typeof f.sharedLedger, sqlite: typeof f.sqliteDriver }));`);
    expect(r.stderr).toBe('');
    expect(JSON.parse(r.stdout)).toEqual({ handler: 'function', guard: 'function', sqlite: 'function' });
  }, 240_000);
});
