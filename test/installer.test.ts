import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BUNDLE_REL, doctor, install, MANIFEST_NAME, uninstall } from '../src/installer';
import { findFlowiseComponents } from '../src/installer/locate';
import { fakeFlowise } from './support/fake-flowise';

const ROOT = path.resolve(__dirname, '..');
const built = fs.existsSync(path.join(ROOT, BUNDLE_REL, 'engine', 'index.js'));

function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      out.push(`${path.relative(dir, p)}${e.isDirectory() ? '/' : `:${fs.statSync(p).size}`}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

describe.skipIf(!built)('installer (temp directory shaped like a Flowise npm install)', () => {
  let env: { dir: string; fc: string };
  beforeEach(() => {
    env = fakeFlowise();
  });
  afterEach(() => fs.rmSync(env.dir, { recursive: true, force: true }));

  it('finds flowise-components from an install dir, node_modules/flowise, the monorepo layout or itself', () => {
    expect(findFlowiseComponents(env.dir).dir).toBe(env.fc);
    expect(findFlowiseComponents(path.join(env.dir, 'node_modules', 'flowise')).dir).toBe(env.fc);
    expect(findFlowiseComponents(env.fc).dir).toBe(env.fc);
    const mono = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-mono-'));
    fs.cpSync(env.fc, path.join(mono, 'packages', 'components'), { recursive: true });
    expect(findFlowiseComponents(mono).dir).toBe(path.join(mono, 'packages', 'components'));
    fs.rmSync(mono, { recursive: true, force: true });
    const none = findFlowiseComponents(path.join(env.dir, 'nope'));
    expect(none.dir).toBeNull();
    expect(() => install({ flowise: path.join(env.dir, 'nope') })).toThrow(/flowise-components not found/);
  });

  it('installs, loads in Node, is idempotent, and uninstall restores the tree exactly', () => {
    const before = listing(env.dir);
    const r = install({ flowise: env.dir });
    expect(r.action).toBe('installed');
    expect(r.componentsVersion).toBe('3.1.4');
    expect(r.flowiseVersion).toBe('3.1.4');
    expect(r.nodes.map((n) => path.basename(n)).sort()).toEqual(['BillingGate.js', 'Charge.js', 'MeteredChatModel.js', 'MeteredTool.js', 'MeteredVariants.js', 'QuotaGuard.js', 'UsageTool.js']);
    expect(r.credentials).toEqual(['dist/credentials/billing/BillingLedger.credential.js', 'dist/credentials/billing/StripeBilling.credential.js']);
    for (const dep of ['zod', 'jsonwebtoken', 'jws', 'ms', 'pg']) expect(Object.keys(r.runtimeDependencies)).toContain(dep);
    expect(Object.keys(r.runtimeDependencies).some((d) => d.startsWith('@langchain/') || d === 'better-sqlite3')).toBe(false);
    // icons sit next to the node files
    expect(fs.existsSync(path.join(env.fc, 'dist/nodes/billing/QuotaGuard/quotaguard.svg'))).toBe(true);
    // A small payload: one engine file, the node and credential files, icons, package.json, marker.
    expect(r.files).toBeLessThanOrEqual(25);
    expect(r.bytes).toBeLessThan(3_000_000);
    const engine = path.join(env.fc, 'node_modules/flowise-billing/dist/src/plugin/index.js');
    expect(fs.existsSync(engine)).toBe(true);
    expect(fs.existsSync(path.join(env.fc, 'node_modules/flowise-billing/node_modules'))).toBe(false);
    // node files reach the engine as `flowise-billing`, and nothing relative outside their own folder
    const guard = fs.readFileSync(path.join(env.fc, 'dist/nodes/billing/QuotaGuard/QuotaGuard.js'), 'utf8');
    expect(guard).toContain('require("flowise-billing")');
    expect(guard).not.toMatch(/require\("\.\.?\//);
    // The engine loads LangChain only as flowise-components' copy (never bundled).
    expect(fs.readFileSync(engine, 'utf8')).toContain('require("@langchain/core/callbacks/base")');

    // Every node and credential loads from its installed place, and our @langchain/core is flowise-components' copy.
    const script = `
      const path = require('path');
      const fc = ${JSON.stringify(env.fc)};
      const names = [];
      for (const n of ['QuotaGuard','MeteredChatModel','MeteredTool','UsageTool','BillingGate','Charge']) {
        const m = require(path.join(fc, 'dist/nodes/billing', n, n + '.js'));
        const node = new m.nodeClass();
        if (node.author) throw new Error('author set');
        names.push(node.name + ':' + node.category);
      }
      for (const c of ['BillingLedger','StripeBilling']) names.push(new (require(path.join(fc, 'dist/credentials/billing', c + '.credential.js')).credClass)().name);
      const core = require.resolve('@langchain/core/callbacks/base', { paths: [path.join(fc, 'node_modules/flowise-billing/dist/src/plugin')] });
      process.stdout.write(JSON.stringify({ names, core }));`;
    const out = spawnSync(process.execPath, ['-e', script], { cwd: os.tmpdir(), encoding: 'utf8' });
    expect(out.stderr).toBe('');
    const loaded = JSON.parse(out.stdout);
    expect(loaded.names).toEqual([
      'quotaGuard:Billing',
      'meteredChatModel:Billing',
      'meteredTool:Billing',
      'billingUsageTool:Billing',
      'billingGateAgentflow:Agent Flows',
      'chargeAgentflow:Agent Flows',
      'billingLedger',
      'stripeBilling',
    ]);
    expect(loaded.core.startsWith(fs.realpathSync(path.join(env.fc, 'node_modules', '@langchain', 'core')))).toBe(true);

    const d = doctor({ flowise: env.dir });
    expect(d.problems).toEqual([]);
    expect(d.ok).toBe(true);
    expect(d.installed?.version).toBe('0.1.0');
    expect(d.langchainCore.billing?.dir).toBe(d.langchainCore.flowise?.dir);

    const after1 = listing(env.dir).filter((l) => !l.startsWith(`node_modules/flowise-components/${MANIFEST_NAME}`));
    const again = install({ flowise: env.dir });
    expect(again.action).toBe('reinstalled');
    expect(again.files).toBe(r.files);
    expect(listing(env.dir).filter((l) => !l.startsWith(`node_modules/flowise-components/${MANIFEST_NAME}`))).toEqual(after1);

    const u = uninstall({ flowise: env.dir });
    expect(u.wasInstalled).toBe(true);
    expect(u.missing).toEqual([]);
    expect(listing(env.dir)).toEqual(before);
    expect(uninstall({ flowise: env.dir }).wasInstalled).toBe(false);
    expect(doctor({ flowise: env.dir }).problems.map((p) => p.code)).toEqual(['NOT_INSTALLED']);
  });

  it('reports a second @langchain/core visible to the engine, and missing files after an upgrade', () => {
    install({ flowise: env.dir });
    const stray = path.join(env.fc, 'node_modules', 'flowise-billing', 'node_modules', '@langchain', 'core');
    fs.mkdirSync(stray, { recursive: true });
    fs.writeFileSync(path.join(stray, 'package.json'), JSON.stringify({ name: '@langchain/core', version: '0.3.0' }));
    fs.rmSync(path.join(env.fc, 'dist', 'nodes', 'billing', 'Charge'), { recursive: true });
    const codes = doctor({ flowise: env.dir }).problems.map((p) => p.code);
    expect(codes).toContain('SECOND_LANGCHAIN_CORE');
    expect(codes).toContain('FILES_MISSING');
  });

  it('never overwrites files it did not install', () => {
    const foreign = path.join(env.fc, 'dist', 'nodes', 'billing', 'QuotaGuard');
    fs.mkdirSync(foreign, { recursive: true });
    fs.writeFileSync(path.join(foreign, 'QuotaGuard.js'), '// someone else\n');
    expect(() => install({ flowise: env.dir })).toThrow(/not installed by flowise-billing/);
    expect(fs.readFileSync(path.join(foreign, 'QuotaGuard.js'), 'utf8')).toBe('// someone else\n');
    expect(fs.existsSync(path.join(env.fc, MANIFEST_NAME))).toBe(false);
  });

  it('a write that fails part-way (here: a file where a folder goes) undoes what it wrote, so install can simply be re-run', () => {
    fs.mkdirSync(path.join(env.fc, 'dist', 'nodes', 'chatmodels', 'ChatX'), { recursive: true });
    fs.writeFileSync(path.join(env.fc, 'dist', 'nodes', 'chatmodels', 'ChatX', 'ChatX.js'), 'exports.nodeClass = class {};\n');
    const blocker = path.join(env.fc, 'dist', 'credentials', 'billing');
    fs.writeFileSync(blocker, 'not a folder\n');
    const before = listing(env.fc);
    let err: (Error & { code?: string }) | undefined;
    try {
      install({ flowise: env.dir });
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('INSTALL_FAILED');
    expect(err?.message).toMatch(/^Install into .* failed and was undone: /);
    expect(err?.message).toContain('dist/credentials/billing');
    // Before: nodes, engine and variants stayed without a manifest; install then refused them as foreign, and uninstall saw nothing.
    expect(listing(env.fc)).toEqual(before);
    fs.rmSync(blocker);
    expect(install({ flowise: env.dir }).action).toBe('installed');
    expect(uninstall({ flowise: env.dir }).wasInstalled).toBe(true);
  });

  it('doctor names files left without a manifest (an interrupted install of an older version) and how to clear them; install refuses them with the same fix', () => {
    const leftover = path.join(env.fc, 'dist', 'nodes', 'billing', 'QuotaGuard');
    fs.mkdirSync(leftover, { recursive: true });
    fs.writeFileSync(path.join(leftover, 'QuotaGuard.js'), '// left behind\n');
    const p = doctor({ flowise: env.dir }).problems.find((x) => x.code === 'NOT_INSTALLED');
    expect(p?.message).toMatch(/files of an earlier or interrupted install are there without a manifest: dist\/nodes\/billing/);
    expect(p?.fix).toContain(`rm -rf ${path.join(env.fc, 'dist', 'nodes', 'billing')}`);
    expect(() => install({ flowise: env.dir })).toThrow(/not installed by flowise-billing.*if an earlier flowise-billing install left it, run: rm -rf /);
  });

  it('uninstall that cannot remove a file fails with INSTALL_FAILED naming it and keeps the manifest, so it can be re-run', () => {
    install({ flowise: env.dir });
    // Something uninstall cannot delete as a file (a folder where our icon was).
    const icon = path.join(env.fc, 'dist', 'nodes', 'billing', 'Charge', 'charge.svg');
    fs.rmSync(icon);
    fs.mkdirSync(path.join(icon, 'x'), { recursive: true });
    let err: (Error & { code?: string }) | undefined;
    try {
      uninstall({ flowise: env.dir });
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('INSTALL_FAILED');
    expect(err?.message).toMatch(/^Uninstall from .* stopped at .*charge\.svg: .*the manifest lists the rest: run uninstall again once fixed$/);
    expect(fs.existsSync(path.join(env.fc, MANIFEST_NAME))).toBe(true);
    fs.rmSync(icon, { recursive: true });
    expect(uninstall({ flowise: env.dir }).wasInstalled).toBe(true);
    expect(fs.existsSync(path.join(env.fc, MANIFEST_NAME))).toBe(false);
  });

  it('bundles every node folder and credential in the repo (discovery is by folder, so a new node needs no installer change)', () => {
    const r = install({ flowise: env.dir });
    const nodeDirs = fs.readdirSync(path.join(ROOT, 'nodes')).filter((d) => fs.existsSync(path.join(ROOT, 'nodes', d, `${d}.ts`)));
    expect(r.nodes.map((n) => path.basename(n, '.js')).sort()).toEqual(nodeDirs.sort());
    const creds = fs.readdirSync(path.join(ROOT, 'credentials')).filter((f) => f.endsWith('.credential.ts'));
    expect(r.credentials.map((c) => path.basename(c, '.js')).sort()).toEqual(creds.map((c) => c.replace(/\.ts$/, '')).sort());
  });
});
