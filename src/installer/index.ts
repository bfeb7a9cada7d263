import { BillingError } from '../errors';
import fs from 'node:fs';
import path from 'node:path';
import {
  BUNDLE_REL,
  CREDENTIALS_REL,
  ENGINE_REL,
  type InstallOptions,
  leftovers,
  type Manifest,
  MANIFEST_FORMAT,
  MANIFEST_NAME,
  NODES_REL,
  posix,
  readManifest,
  removeCommand,
  RUNTIME_MARKER,
  RUNTIME_REL,
} from './layout';
import { findFlowiseComponents, findFlowiseServer, ownPackageRoot, readPackage } from './locate';
import { variantTargets, writeVariants } from './variants';

/**
 * `flowise-billing install | uninstall` (doctor: doctor.ts; the layout and its manifest: layout.ts).
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

const ICON = /\.(svg|png|jpg)$/;

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

/** What to do about a write or a removal the file system refused. */
function permissionHint(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  return code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? ' (no write permission there: run this as the owner of the Flowise install, e.g. with sudo for a global npm install)' : '';
}

/** Removes `abs`; a refusal becomes an InstallerError naming the path (the manifest stays, so the caller can be re-run). */
function remove(abs: string, opts: { recursive?: boolean } = {}): void {
  try {
    fs.rmSync(abs, { force: true, ...opts });
  } catch (e) {
    throw new InstallerError(`${abs}: ${(e as Error)?.message ?? String(e)}${permissionHint(e)}`, { path: abs, ...((e as NodeJS.ErrnoException)?.code ? { cause: (e as NodeJS.ErrnoException).code } : {}) });
  }
}

function removeAdded(fcDir: string, m: Manifest): { removed: number; missing: string[] } {
  let removed = 0;
  const missing: string[] = [];
  for (const rel of m.files) {
    const abs = path.join(fcDir, rel);
    if (m.trees.some((t) => rel.startsWith(`${t}/`))) continue;
    if (fs.existsSync(abs)) {
      remove(abs);
      removed++;
    } else missing.push(rel);
  }
  for (const t of m.trees) {
    const abs = path.join(fcDir, t);
    // Only a tree carrying our marker is ours to delete.
    if (fs.existsSync(path.join(abs, RUNTIME_MARKER))) {
      removed += m.files.filter((f) => f.startsWith(`${t}/`)).length;
      remove(abs, { recursive: true });
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
    if (fs.existsSync(path.join(fc, t)) && !ours.has(t)) {
      // Ours by its place (an interrupted install of an older version): say how to clear it.
      const left = previous ? [] : leftovers(fc);
      const hint = left.length ? `; if an earlier flowise-billing install left it, run: ${removeCommand(fc, left)}` : '';
      throw new InstallerError(`${path.join(fc, t)} exists and was not installed by flowise-billing; not overwriting it${hint}`);
    }
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
    // Listed before it is written: a write that fails part-way is undone with the rest.
    added.push(posix(path.relative(fc, to)));
    fs.writeFileSync(to, content);
    bytes += Buffer.byteLength(content);
  };
  const variants: string[] = [];
  /** What this install wrote so far: the manifest, or what undoing a failed install removes. */
  const manifestNow = (installedAt: string): Manifest => ({
    format: MANIFEST_FORMAT,
    package: { name: pkg.name!, version: pkg.version! },
    installedAt,
    files: [...added, ...variants].sort(),
    dirs: [...dirs].sort(),
    trees: [posix(RUNTIME_REL)],
    runtimeDependencies: b.inlined,
  });
  try {
    copyPlugin();
  } catch (e) {
    // Nothing half-installed: files without a manifest would be loaded by Flowise, refused by the next install
    // as not ours, and missed by uninstall.
    removeAdded(fc, manifestNow(''));
    const err = e as NodeJS.ErrnoException;
    throw new InstallerError(
      `Install into ${fc} failed and was undone: ${err?.message ?? String(e)}${permissionHint(e)}${previous ? '; the previous install had already been removed' : ''}; fix that and run install again`,
      { ...(err?.code ? { cause: err.code } : {}), ...(err?.path ? { path: err.path } : {}) },
    );
  }

  function copyPlugin(): void {
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
    writeVariants(fc, variants);
    for (const r of b.credentials) {
      const code = fs.readFileSync(path.join(b.dir, 'credentials', r), 'utf8');
      if (/require\(/.test(code)) warnings.push(`${r} has a require(); a credential that throws on load stops Flowise from starting`);
      put(path.join(fc, CREDENTIALS_REL, r), code);
    }
    fs.writeFileSync(path.join(fc, MANIFEST_NAME), JSON.stringify(manifestNow(new Date().toISOString()), null, 2) + '\n');
  }

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
    files: added.length + variants.length,
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
  let r: ReturnType<typeof removeAdded>;
  try {
    r = removeAdded(fc, m);
  } catch (e) {
    if (!(e instanceof InstallerError)) throw e;
    // The manifest is removed last: a re-run removes the rest.
    throw new InstallerError(`Uninstall from ${fc} stopped at ${e.message}; what was removed stays removed, the manifest lists the rest: run uninstall again once fixed`, e.details);
  }
  return { ok: true, componentsDir: fc, removed: r.removed, missing: r.missing, wasInstalled: true };
}

export { doctor, type DoctorOptions, type DoctorResult } from './doctor';
export { BUNDLE_REL, type InstallOptions, type Manifest, MANIFEST_NAME, type Problem, readManifest } from './layout';
export { findFlowiseComponents } from './locate';
