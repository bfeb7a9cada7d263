import { BillingError } from '../errors';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { findFlowiseComponents, findFlowiseServer, ownPackageRoot, readPackage, resolvePackageDir } from './locate';
import { variantTargets, writeVariants } from './variants';

/**
 * `flowise-billing install | uninstall | doctor`.
 *
 * Flowise loads nodes only from flowise-components/dist/nodes/** and
 * credentials from flowise-components/dist/credentials/**, so installing means
 * copying files there (copies, not symlinks: Flowise does not descend into a
 * symlinked folder). What is copied is the build's self-contained bundle
 * (dist/flowise, made by scripts/bundle-flowise.mjs). Layout inside
 * flowise-components (FC):
 *
 *   FC/dist/nodes/billing/<Node>/<Node>.js + icon   our nodes; each requires the engine as `flowise-billing`
 *   FC/dist/credentials/billing/*.credential.js     our credentials (no imports)
 *   FC/node_modules/flowise-billing/                 the engine: one bundled file plus package.json and a marker
 *   FC/flowise-billing.manifest.json                 what was added
 *
 * The engine bundle leaves out `@langchain/core`, so module resolution from
 * FC/node_modules/flowise-billing finds flowise-components' own copy, the one
 * its chains, agents and callback manager use. better-sqlite3 is left out too
 * (native, built for one Node ABI); under Flowise's Node 24 the ledger uses the
 * built-in node:sqlite.
 */

export const MANIFEST_NAME = 'flowise-billing.manifest.json';
const MANIFEST_FORMAT = 1;
const RUNTIME_REL = path.join('node_modules', 'flowise-billing');
const RUNTIME_MARKER = '.flowise-billing-runtime';
/** Where the engine sits inside the runtime package; also reachable as `flowise-billing/dist/src/plugin`. */
const ENGINE_REL = path.join('dist', 'src', 'plugin', 'index.js');
const NODES_REL = path.join('dist', 'nodes', 'billing');
const CREDENTIALS_REL = path.join('dist', 'credentials', 'billing');
/** The build's bundle, relative to the package root. */
export const BUNDLE_REL = path.join('dist', 'flowise');
const ICON = /\.(svg|png|jpg)$/;

export interface Problem {
  readonly code: string;
  /** What is wrong. */
  readonly message: string;
  /** What to do about it. */
  readonly fix: string;
}

export interface Manifest {
  readonly format: number;
  readonly package: { readonly name: string; readonly version: string };
  readonly installedAt: string;
  /** Files added, relative to flowise-components, '/'-separated. */
  readonly files: string[];
  /** Directories created (removed when empty, deepest first). */
  readonly dirs: string[];
  /** Whole trees created by us (each holds a marker file). */
  readonly trees: string[];
  readonly runtimeDependencies: Record<string, string>;
}

export interface InstallOptions {
  /** A Flowise install, monorepo or flowise-components directory; default: look around the cwd, then the global npm root. */
  readonly flowise?: string;
  /** This package's root (default: where this file lives). */
  readonly packageRoot?: string;
}

export interface InstallResult {
  readonly ok: true;
  readonly action: 'installed' | 'reinstalled';
  readonly componentsDir: string;
  readonly componentsVersion: string | null;
  readonly flowiseVersion: string | null;
  readonly packageVersion: string;
  readonly nodes: string[];
  readonly credentials: string[];
  /** Metered variants written beside flowise-components' chat models and tools. */
  readonly variants: string[];
  readonly runtimeDir: string;
  /** Packages inlined into the engine bundle, with their versions. */
  readonly runtimeDependencies: Record<string, string>;
  readonly files: number;
  /** Bytes written, manifest excluded. */
  readonly bytes: number;
  readonly manifest: string;
  readonly warnings: string[];
}

export class InstallerError extends BillingError {
  constructor(message: string, details: Record<string, unknown> = {}) {
    super('INSTALL_FAILED', message, details);
  }
}

const posix = (p: string) => p.split(path.sep).join('/');

function components(hint?: string): string {
  const r = findFlowiseComponents(hint);
  if (!r.dir) {
    throw new InstallerError(
      hint
        ? `flowise-components not found at or under ${path.resolve(hint)} (give a Flowise install directory, its node_modules/flowise, a Flowise monorepo or flowise-components itself)`
        : 'flowise-components not found in the current directory, its parents or the global npm root; pass --flowise <path>',
      { tried: r.tried },
    );
  }
  return r.dir;
}

function walk(dir: string, filter: (rel: string) => boolean, base = dir, out: string[] = []): string[] {
  if (!fs.existsSync(dir)) return out;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const abs = path.join(dir, e.name);
    if (e.isDirectory()) walk(abs, filter, base, out);
    else if (e.isFile() && filter(path.relative(base, abs))) out.push(path.relative(base, abs));
  }
  return out.sort();
}

export function readManifest(componentsDir: string): Manifest | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(componentsDir, MANIFEST_NAME), 'utf8')) as Manifest;
    return m && m.format === MANIFEST_FORMAT ? m : null;
  } catch {
    return null;
  }
}

function removeAdded(fcDir: string, m: Manifest): { removed: number; missing: string[] } {
  let removed = 0;
  const missing: string[] = [];
  for (const rel of m.files) {
    const abs = path.join(fcDir, rel);
    if (m.trees.some((t) => rel.startsWith(`${t}/`))) continue;
    if (fs.existsSync(abs)) {
      fs.rmSync(abs, { force: true });
      removed++;
    } else missing.push(rel);
  }
  for (const t of m.trees) {
    const abs = path.join(fcDir, t);
    // Only a tree carrying our marker is ours to delete.
    if (fs.existsSync(path.join(abs, RUNTIME_MARKER))) {
      removed += m.files.filter((f) => f.startsWith(`${t}/`)).length;
      fs.rmSync(abs, { recursive: true, force: true });
    }
  }
  for (const d of [...m.dirs].sort((a, b) => b.length - a.length)) {
    const abs = path.join(fcDir, d);
    try {
      if (fs.readdirSync(abs).length === 0) fs.rmdirSync(abs);
    } catch {
      // already gone
    }
  }
  fs.rmSync(path.join(fcDir, MANIFEST_NAME), { force: true });
  return { removed, missing };
}

/** What the bundle holds: its files by kind, and the packages inlined into the engine (written by the build). */
function bundleContents(root: string) {
  const bundle = path.join(root, BUNDLE_REL);
  const engine = path.join(bundle, 'engine', 'index.js');
  if (!fs.existsSync(engine)) throw new InstallerError(`${root} has no Flowise bundle (${path.join(BUNDLE_REL, 'engine', 'index.js')}); run npm run build first`);
  let inlined: Record<string, string> = {};
  try {
    inlined = JSON.parse(fs.readFileSync(path.join(bundle, 'engine', 'packages.json'), 'utf8')) as Record<string, string>;
  } catch {
    // an older build without the list: nothing to report
  }
  return {
    engine,
    inlined,
    nodes: walk(path.join(bundle, 'nodes'), (r) => r.endsWith('.js') || ICON.test(r)),
    credentials: walk(path.join(bundle, 'credentials'), (r) => r.endsWith('.credential.js')),
    dir: bundle,
  };
}

/** Copies the plugin into flowise-components. Safe to re-run (e.g. after a Flowise upgrade): it replaces what it added before. */
export function install(opts: InstallOptions = {}): InstallResult {
  const root = opts.packageRoot ?? ownPackageRoot();
  const pkg = readPackage(root)!;
  const b = bundleContents(root);
  const fc = components(opts.flowise);
  const previous = readManifest(fc);
  const warnings: string[] = [];

  const nodeDirs = new Set(b.nodes.filter((r) => r.endsWith('.js')).map((r) => path.dirname(r)));
  for (const dir of nodeDirs) {
    if (!b.nodes.some((r) => ICON.test(r) && path.dirname(r) === dir)) warnings.push(`no icon found for ${dir}; Flowise will show a blank icon`);
  }
  const runtimeDir = path.join(fc, RUNTIME_REL);

  // Never overwrite something that is not ours.
  const ours = new Set(previous?.files ?? []);
  const targets = [...b.nodes.map((r) => path.join(NODES_REL, r)), ...b.credentials.map((r) => path.join(CREDENTIALS_REL, r)), ...variantTargets(fc)].map(posix);
  for (const t of targets) {
    if (fs.existsSync(path.join(fc, t)) && !ours.has(t)) throw new InstallerError(`${path.join(fc, t)} exists and was not installed by flowise-billing; not overwriting it`);
  }
  if (fs.existsSync(runtimeDir) && !fs.existsSync(path.join(runtimeDir, RUNTIME_MARKER))) {
    throw new InstallerError(`${runtimeDir} exists and was not installed by flowise-billing; remove it or install elsewhere`);
  }

  if (previous) removeAdded(fc, previous);

  const added: string[] = [];
  const dirs = new Set<string>();
  let bytes = 0;
  const mkdir = (absDir: string) => {
    // Record every directory we create, so uninstall can remove it again when empty.
    const missing: string[] = [];
    for (let d = absDir; !fs.existsSync(d); d = path.dirname(d)) missing.push(d);
    fs.mkdirSync(absDir, { recursive: true });
    for (const d of missing) dirs.add(posix(path.relative(fc, d)));
  };
  const put = (to: string, content: string | Buffer) => {
    mkdir(path.dirname(to));
    fs.writeFileSync(to, content);
    bytes += Buffer.byteLength(content);
    added.push(posix(path.relative(fc, to)));
  };

  // 1. the engine: one file, plus a package.json so `require('flowise-billing')` finds it
  put(path.join(runtimeDir, RUNTIME_MARKER), `installed by flowise-billing ${pkg.version}; removed by flowise-billing uninstall\n`);
  put(
    path.join(runtimeDir, 'package.json'),
    JSON.stringify({ name: pkg.name, version: pkg.version, main: posix(ENGINE_REL), private: true, description: 'flowise-billing engine bundle, copied by flowise-billing install' }, null, 2) + '\n',
  );
  put(path.join(runtimeDir, ENGINE_REL), fs.readFileSync(b.engine));
  // 2. nodes and their icons, 3. credentials (a credential that throws on load stops Flowise from starting)
  for (const r of b.nodes) put(path.join(fc, NODES_REL, r), fs.readFileSync(path.join(b.dir, 'nodes', r)));
  // 2b. a metered variant beside each chat model and tool (see variants.ts)
  const variants = writeVariants(fc);
  added.push(...variants);
  for (const r of b.credentials) {
    const code = fs.readFileSync(path.join(b.dir, 'credentials', r), 'utf8');
    if (/require\(/.test(code)) warnings.push(`${r} has a require(); a credential that throws on load stops Flowise from starting`);
    put(path.join(fc, CREDENTIALS_REL, r), code);
  }

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    package: { name: pkg.name!, version: pkg.version! },
    installedAt: new Date().toISOString(),
    files: added.sort(),
    dirs: [...dirs].sort(),
    trees: [posix(RUNTIME_REL)],
    runtimeDependencies: b.inlined,
  };
  fs.writeFileSync(path.join(fc, MANIFEST_NAME), JSON.stringify(manifest, null, 2) + '\n');
  const server = findFlowiseServer(fc);
  return {
    ok: true,
    action: previous ? 'reinstalled' : 'installed',
    componentsDir: fc,
    componentsVersion: readPackage(fc)?.version ?? null,
    flowiseVersion: server ? (readPackage(server)?.version ?? null) : null,
    packageVersion: pkg.version!,
    nodes: b.nodes.filter((r) => r.endsWith('.js')).map((r) => posix(path.join(NODES_REL, r))),
    credentials: b.credentials.map((r) => posix(path.join(CREDENTIALS_REL, r))),
    variants,
    runtimeDir,
    runtimeDependencies: b.inlined,
    files: added.length,
    bytes,
    manifest: path.join(fc, MANIFEST_NAME),
    warnings,
  };
}

export interface UninstallResult {
  readonly ok: true;
  readonly componentsDir: string;
  readonly removed: number;
  /** Files the manifest lists that were already gone. */
  readonly missing: string[];
  readonly wasInstalled: boolean;
}

/** Removes exactly what the manifest says install added. */
export function uninstall(opts: InstallOptions = {}): UninstallResult {
  const fc = components(opts.flowise);
  const m = readManifest(fc);
  if (!m) return { ok: true, componentsDir: fc, removed: 0, missing: [], wasInstalled: false };
  const { removed, missing } = removeAdded(fc, m);
  return { ok: true, componentsDir: fc, removed, missing, wasInstalled: true };
}

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
  if (!m) problems.push({ code: 'NOT_INSTALLED', message: `flowise-billing is not installed in ${fc}`, fix: `run: flowise-billing install --flowise ${fc}, then restart Flowise` });
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

export { findFlowiseComponents } from './locate';
