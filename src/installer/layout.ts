import fs from 'node:fs';
import path from 'node:path';
import { variantFilesIn } from './variants';

/**
 * Where the plugin's files go inside flowise-components (FC), and the
 * manifest that lists what install added there (index.ts writes it, doctor.ts
 * and uninstall read it).
 */

export const MANIFEST_NAME = 'flowise-billing.manifest.json';
export const MANIFEST_FORMAT = 1;
export const RUNTIME_REL = path.join('node_modules', 'flowise-billing');
export const RUNTIME_MARKER = '.flowise-billing-runtime';
/** Where the engine sits inside the runtime package; also reachable as `flowise-billing/dist/src/plugin`. */
export const ENGINE_REL = path.join('dist', 'src', 'plugin', 'index.js');
export const NODES_REL = path.join('dist', 'nodes', 'billing');
export const CREDENTIALS_REL = path.join('dist', 'credentials', 'billing');
/** The build's bundle, relative to the package root. */
export const BUNDLE_REL = path.join('dist', 'flowise');

export const posix = (p: string) => p.split(path.sep).join('/');

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

/**
 * What an install leaves in flowise-components that is there without a manifest (an interrupted install of an
 * older version, or files copied by hand): the billing node and credential folders, the engine folder with our
 * marker, and variant files. Relative paths, '/'-separated.
 */
export function leftovers(componentsDir: string): string[] {
  const out = [NODES_REL, CREDENTIALS_REL].filter((d) => fs.existsSync(path.join(componentsDir, d)));
  if (fs.existsSync(path.join(componentsDir, RUNTIME_REL, RUNTIME_MARKER))) out.push(RUNTIME_REL);
  return [...out.map(posix), ...variantFilesIn(componentsDir)];
}

/** A shell command removing `rels` (from leftovers) under flowise-components. */
export function removeCommand(componentsDir: string, rels: string[]): string {
  const quote = (p: string) => (/^[\w@%+=:,./-]+$/.test(p) ? p : `'${p.replace(/'/g, `'\\''`)}'`);
  return `rm -rf ${rels.map((r) => quote(path.join(componentsDir, r))).join(' ')}`;
}

export function readManifest(componentsDir: string): Manifest | null {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(componentsDir, MANIFEST_NAME), 'utf8')) as Manifest;
    return m && m.format === MANIFEST_FORMAT ? m : null;
  } catch {
    return null;
  }
}
