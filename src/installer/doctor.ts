import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ENGINE_REL, type InstallOptions, leftovers, NODES_REL, posix, type Problem, readManifest, removeCommand, RUNTIME_REL } from './layout';
import { findFlowiseComponents, findFlowiseServer, ownPackageRoot, readPackage, resolvePackageDir } from './locate';

/** `flowise-billing doctor`: what is installed where, which versions, and what is wrong, with the fix for each. */

export interface DoctorOptions extends InstallOptions {
  /** A Node binary to load the installed files with (the one Flowise runs on), to prove they load. */
  readonly node?: string;
}

export interface DoctorResult {
  readonly ok: boolean;
  readonly componentsDir: string | null;
  readonly componentsVersion: string | null;
  readonly flowiseVersion: string | null;
  readonly installed: { readonly version: string; readonly installedAt: string; readonly files: number } | null;
  readonly packageVersion: string | null;
  readonly langchainCore: {
    /** What flowise-components' own code loads. */
    readonly flowise: { readonly dir: string; readonly version: string | null } | null;
    /** What our installed engine loads. */
    readonly billing: { readonly dir: string; readonly version: string | null } | null;
    /** Every copy found in the install (informational: Flowise itself carries several). */
    readonly copies: Array<{ readonly dir: string; readonly version: string | null }>;
  };
  readonly load?: { readonly node: string; readonly nodeVersion: string | null; readonly nodes: string[]; readonly credentials: string[]; readonly sqliteDriver: string | null; readonly errors: string[] };
  readonly problems: Problem[];
}

function findCopies(rootNodeModules: string, name: string, depth = 4): string[] {
  const out: string[] = [];
  const visit = (nm: string, d: number) => {
    if (d < 0 || !fs.existsSync(nm)) return;
    const p = path.join(nm, name);
    if (fs.existsSync(path.join(p, 'package.json'))) out.push(p);
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(nm, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (!e.isDirectory() || e.name.startsWith('.')) continue;
      if (e.name.startsWith('@')) {
        for (const s of fs.readdirSync(path.join(nm, e.name), { withFileTypes: true })) {
          if (s.isDirectory()) visit(path.join(nm, e.name, s.name, 'node_modules'), d - 1);
        }
      } else visit(path.join(nm, e.name, 'node_modules'), d - 1);
    }
  };
  visit(rootNodeModules, depth);
  return out.sort();
}

/** Reports what is installed, versions, and problems; never changes anything. */
export function doctor(opts: DoctorOptions = {}): DoctorResult {
  const problems: Problem[] = [];
  let packageVersion: string | null = null;
  try {
    packageVersion = readPackage(opts.packageRoot ?? ownPackageRoot())?.version ?? null;
  } catch {
    // running from an unusual place: no version to compare
  }
  const found = findFlowiseComponents(opts.flowise);
  if (!found.dir) {
    problems.push({
      code: 'FLOWISE_NOT_FOUND',
      message: `flowise-components not found (tried ${(found.tried ?? []).slice(0, 6).join(', ')}${(found.tried ?? []).length > 6 ? ', …' : ''})`,
      fix: 'pass --flowise <dir>: the Flowise install directory (where `npm install flowise` ran), its node_modules/flowise, or a Flowise monorepo checkout',
    });
    return { ok: false, componentsDir: null, componentsVersion: null, flowiseVersion: null, installed: null, packageVersion, langchainCore: { flowise: null, billing: null, copies: [] }, problems };
  }
  const fc = found.dir;
  const server = findFlowiseServer(fc);
  const m = readManifest(fc);
  const left = m ? [] : leftovers(fc);
  if (!m && left.length === 0) problems.push({ code: 'NOT_INSTALLED', message: `flowise-billing is not installed in ${fc}`, fix: `run: flowise-billing install --flowise ${fc}, then restart Flowise` });
  else if (!m) {
    // install refuses files it has no manifest for, so "run install" alone would not help.
    problems.push({
      code: 'NOT_INSTALLED',
      message: `flowise-billing is not installed in ${fc}, but files of an earlier or interrupted install are there without a manifest: ${left.slice(0, 4).join(', ')}${left.length > 4 ? `, … (${left.length})` : ''}`,
      fix: `run: ${removeCommand(fc, left)}; then flowise-billing install --flowise ${fc}, and restart Flowise`,
    });
  }
  else {
    const missing = m.files.filter((f) => !fs.existsSync(path.join(fc, f)));
    if (missing.length) {
      problems.push({
        code: 'FILES_MISSING',
        message: `${missing.length} installed file(s) are missing (e.g. ${missing[0]}), usually because a Flowise upgrade replaced flowise-components`,
        fix: `run: flowise-billing install --flowise ${fc}, then restart Flowise and its workers`,
      });
    }
    if (packageVersion && m.package.version !== packageVersion) {
      problems.push({
        code: 'VERSION_MISMATCH',
        message: `flowise-billing ${m.package.version} is installed in Flowise, this CLI is ${packageVersion}`,
        fix: `run: flowise-billing install --flowise ${fc} (replaces the installed copy), then restart Flowise`,
      });
    }
  }
  const coreInfo = (dir: string | null) => (dir ? { dir, version: readPackage(dir)?.version ?? null } : null);
  const flowiseCore = coreInfo(resolvePackageDir('@langchain/core', path.join(fc, 'dist', 'src')));
  const billingCore = coreInfo(resolvePackageDir('@langchain/core', path.dirname(path.join(fc, RUNTIME_REL, ENGINE_REL))));
  if (m) {
    if (!billingCore) {
      problems.push({
        code: 'LANGCHAIN_MISSING',
        message: '@langchain/core does not resolve from the installed engine',
        fix: `flowise-components at ${fc} looks incomplete: reinstall Flowise (npm install flowise), then flowise-billing install`,
      });
    }
    else if (flowiseCore && fs.realpathSync(billingCore.dir) !== fs.realpathSync(flowiseCore.dir)) {
      problems.push({
        code: 'SECOND_LANGCHAIN_CORE',
        message: `the billing engine resolves @langchain/core ${billingCore.version} at ${billingCore.dir}, not flowise-components' ${flowiseCore.version} at ${flowiseCore.dir}`,
        fix: `remove the extra copy at ${billingCore.dir} (something other than flowise-billing put it there), then restart Flowise`,
      });
    }
  }
  const rootNm = path.resolve(fc, '..').endsWith(`${path.sep}node_modules`) ? path.resolve(fc, '..') : path.join(fc, 'node_modules');
  const copies = findCopies(rootNm, path.join('@langchain', 'core')).map((d) => coreInfo(d)!);

  let load: DoctorResult['load'];
  if (opts.node && m) {
    const nodeFiles = m.files.filter((f) => f.startsWith(posix(NODES_REL) + '/') && f.endsWith('.js')).map((f) => path.join(fc, f));
    const credFiles = m.files.filter((f) => f.endsWith('.credential.js')).map((f) => path.join(fc, f));
    const script = `
      const out = { nodeVersion: process.version, nodes: [], credentials: [], errors: [], sqliteDriver: null };
      for (const f of ${JSON.stringify(nodeFiles)}) { try { const m = require(f); if (m.nodeClass) { const n = new m.nodeClass(); out.nodes.push(n.name); if (n.author) out.errors.push(n.name + ' sets author'); } } catch (e) { out.errors.push(f + ': ' + e.message); } }
      for (const f of ${JSON.stringify(credFiles)}) { try { const m = require(f); out.credentials.push(new m.credClass().name); } catch (e) { out.errors.push(f + ': ' + e.message); } }
      try { out.sqliteDriver = require(${JSON.stringify(path.join(fc, RUNTIME_REL, ENGINE_REL))}).sqliteDriver(); } catch (e) { out.errors.push('sqlite: ' + e.message); }
      process.stdout.write(JSON.stringify(out));`;
    const r = spawnSync(opts.node, ['-e', script], { cwd: fc, encoding: 'utf8', timeout: 120_000, env: { ...process.env, NODE_OPTIONS: '' } });
    try {
      const parsed = JSON.parse(r.stdout);
      load = { node: opts.node, ...parsed };
      for (const e of parsed.errors as string[]) {
        problems.push({ code: 'LOAD_ERROR', message: e, fix: `use the Node that runs Flowise (Flowise 3.1 needs Node 24) and re-run flowise-billing install; if it persists, report it with this message` });
      }
    } catch {
      load = { node: opts.node, nodeVersion: null, nodes: [], credentials: [], sqliteDriver: null, errors: [String(r.stderr || r.error || 'no output').slice(0, 500)] };
      problems.push({ code: 'LOAD_ERROR', message: `loading the installed files with ${opts.node} failed: ${load.errors[0]}`, fix: `check that ${opts.node} is the Node binary Flowise runs on (node --version ≥ 24)` });
    }
  }

  return {
    ok: problems.length === 0,
    componentsDir: fc,
    componentsVersion: readPackage(fc)?.version ?? null,
    flowiseVersion: server ? (readPackage(server)?.version ?? null) : null,
    installed: m ? { version: m.package.version, installedAt: m.installedAt, files: m.files.length } : null,
    packageVersion,
    langchainCore: { flowise: flowiseCore, billing: billingCore, copies },
    ...(load ? { load } : {}),
    problems,
  };
}
