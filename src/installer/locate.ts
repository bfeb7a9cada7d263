import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Reads a package.json; undefined when missing or unreadable. */
export function readPackage(dir: string): { name?: string; version?: string; dependencies?: Record<string, string>; optionalDependencies?: Record<string, string> } | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  } catch {
    return undefined;
  }
}

const isComponents = (dir: string) => readPackage(dir)?.name === 'flowise-components' && fs.existsSync(path.join(dir, 'dist', 'nodes'));

/**
 * Where flowise-components is, given a hint (a Flowise install directory, its
 * node_modules/flowise, a Flowise monorepo, or flowise-components itself) or,
 * without one, from the current directory and the global npm root.
 * Returns the candidates tried when nothing matches.
 */
export function findFlowiseComponents(hint?: string, opts: { cwd?: string; globalRoot?: string | null } = {}): { dir: string; tried?: undefined } | { dir: null; tried: string[] } {
  const tried: string[] = [];
  const check = (d: string) => {
    const abs = path.resolve(d);
    tried.push(abs);
    return isComponents(abs) ? abs : null;
  };
  const around = (base: string): string | null => {
    const b = path.resolve(base);
    return (
      check(b) ??
      check(path.join(b, 'node_modules', 'flowise-components')) ??
      check(path.join(b, 'packages', 'components')) ??
      // node_modules/flowise (hoisted sibling) or flowise with its own nested copy
      check(path.join(b, '..', 'flowise-components')) ??
      check(path.join(b, 'node_modules', 'flowise', 'node_modules', 'flowise-components'))
    );
  };
  if (hint) {
    const found = around(hint);
    return found ? { dir: found } : { dir: null, tried };
  }
  const cwd = opts.cwd ?? process.cwd();
  for (let d = path.resolve(cwd); ; d = path.dirname(d)) {
    const found = around(d);
    if (found) return { dir: found };
    if (path.dirname(d) === d) break;
  }
  const g = opts.globalRoot === undefined ? npmGlobalRoot() : opts.globalRoot;
  if (g) {
    const found = check(path.join(g, 'flowise-components')) ?? check(path.join(g, 'flowise', 'node_modules', 'flowise-components'));
    if (found) return { dir: found };
  }
  return { dir: null, tried };
}

function npmGlobalRoot(): string | null {
  try {
    return execFileSync('npm', ['root', '-g'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 15_000 }).trim() || null;
  } catch {
    return null;
  }
}

/** The flowise package next to flowise-components (npm install) or in the monorepo, for version reporting. */
export function findFlowiseServer(componentsDir: string): string | null {
  const candidates = [
    path.join(componentsDir, '..', 'flowise'),
    path.join(componentsDir, '..', '..', 'node_modules', 'flowise'),
    path.join(componentsDir, '..', 'server'),
  ];
  for (const c of candidates) {
    const p = readPackage(c);
    if (p?.name === 'flowise') return path.resolve(c);
  }
  return null;
}

/** This package's root (the directory with its package.json), from dist/src/installer or src/installer. */
export function ownPackageRoot(from: string = __dirname): string {
  for (let d = from; path.dirname(d) !== d; d = path.dirname(d)) {
    if (readPackage(d)?.name === 'flowise-billing') return d;
  }
  throw new Error(`flowise-billing's package.json not found above ${from}`);
}

/** Node's module lookup from `fromDir`: the directory of `name` it would load, or null. */
export function resolvePackageDir(name: string, fromDir: string): string | null {
  for (let d = path.resolve(fromDir); ; d = path.dirname(d)) {
    if (path.basename(d) !== 'node_modules') {
      const c = path.join(d, 'node_modules', name);
      if (fs.existsSync(path.join(c, 'package.json'))) return c;
    }
    if (path.dirname(d) === d) return null;
  }
}
