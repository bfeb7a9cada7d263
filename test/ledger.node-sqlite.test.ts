import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FLOWISE_NODE } from './support/flowise-cache';

// Flowise 3.1 runs on Node 24, where this repo's better-sqlite3 (built for Node 20) cannot load; the
// SQLite dialect then falls back to the built-in node:sqlite. This runs a small ledger workload (20 of
// 30 concurrent holds fit, settle, invariants) under the Node 24 binary of the cached Flowise install.
const node24 = FLOWISE_NODE;
const script = path.join(__dirname, 'support', 'sqlite-driver-check.cjs');
const built = fs.existsSync(path.join(__dirname, '..', 'dist', 'src', 'ledger', 'sqlite.js'));

describe('SQLite driver fallback', () => {
  it.skipIf(!fs.existsSync(node24) || !built)('uses node:sqlite under Node 24 with the same results', () => {
    const r = spawnSync(node24, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^node v24\.\S+ driver node:sqlite$/m);
    expect(r.stdout).toContain('holds ok 20 balance bigint 0.00 held 0.00');
    expect(r.stdout).toContain('invariants true');
    expect(r.stdout).toContain('wal file true');
  });

  it.skipIf(!built)('uses better-sqlite3 under this Node when it loads', () => {
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stdout).toMatch(/driver better-sqlite3/);
    expect(r.stdout).toContain('holds ok 20 balance bigint 0.00 held 0.00');
  });
});
