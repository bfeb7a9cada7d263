import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';

/**
 * scripts/npm-install-retry.sh, the README's `npm install` as .ci/run runs it:
 * a passing registry failure is tried again, a lasting one fails the run.
 * `npm` here is a stand-in on PATH that fails a set number of times and
 * records its arguments: the point is the script's control flow, not npm's.
 */

const ROOT = path.resolve(__dirname, '..');
const SCRIPT = path.join(ROOT, 'scripts', 'npm-install-retry.sh');
let dir = '';

afterEach(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  dir = '';
});

function run(failures: number): { status: number | null; stderr: string; calls: string[] } {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-ci-retry-'));
  const log = path.join(dir, 'calls');
  fs.writeFileSync(
    path.join(dir, 'npm'),
    `#!/usr/bin/env bash\necho "$*" >> ${JSON.stringify(log)}\nn=$(wc -l < ${JSON.stringify(log)})\n[ "$n" -gt ${failures} ] || { echo "npm error code ETARGET" >&2; exit 1; }\n`,
    { mode: 0o755 },
  );
  const r = spawnSync('bash', [SCRIPT], { env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, NPM_INSTALL_RETRY_DELAY: '0' }, encoding: 'utf8' });
  const calls = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [];
  return { status: r.status, stderr: r.stderr, calls };
}

describe('.ci/run: npm install retried on a passing failure', () => {
  it('installs once when the first attempt succeeds', () => {
    const r = run(0);
    expect(r.status).toBe(0);
    expect(r.calls).toEqual(['install --no-audit --no-fund']);
    expect(r.stderr).not.toContain('npm-install-retry');
  });

  it('tries again, revalidating cached documents, and succeeds on the third attempt', () => {
    const r = run(2);
    expect(r.status).toBe(0);
    expect(r.calls).toEqual(['install --no-audit --no-fund', 'install --no-audit --no-fund --prefer-online', 'install --no-audit --no-fund --prefer-online']);
    expect(r.stderr).toContain('npm install failed (attempt 1 of 3)');
    expect(r.stderr).toContain('npm install failed (attempt 2 of 3)');
  });

  it('fails the run after three failures, saying so', () => {
    const r = run(5);
    expect(r.status).toBe(1);
    expect(r.calls).toHaveLength(3);
    expect(r.stderr).toContain('npm install failed 3 times');
  });

  it('is what .ci/run runs before the README test command', () => {
    const ci = fs.readFileSync(path.join(ROOT, '.ci', 'run'), 'utf8');
    const install = ci.indexOf('bash scripts/npm-install-retry.sh');
    expect(install).toBeGreaterThan(-1);
    expect(ci.indexOf('\nnpm test', install)).toBeGreaterThan(install);
  });
});
