import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
export const MAIN = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the built CLI (`npm test` builds first) as a real subprocess. */
export function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

export async function createKey(db: string, scope: 'read' | 'write' | 'admin'): Promise<{ id: string; token: string }> {
  const r = await cli(['--db', db, '--json', 'apikeys', 'create', '--scope', scope, '--name', `test ${scope}`]);
  if (r.code !== 0) throw new Error(`apikeys create failed: ${r.stdout}${r.stderr}`);
  return JSON.parse(r.stdout) as { id: string; token: string };
}

export interface ServeProcess {
  readonly url: string;
  readonly child: ChildProcess;
  /** Every JSON log line so far. */
  readonly logs: Array<Record<string, unknown>>;
  stop(): Promise<void>;
}

/** `flowise-billing serve --port 0` as a real process; resolves when it logs its URL. */
export function startServe(db: string, args: string[] = [], env: Record<string, string> = {}): Promise<ServeProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [MAIN, '--db', db, 'serve', '--port', '0', '--log-level', 'info', ...args], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const logs: Array<Record<string, unknown>> = [];
    let buf = '';
    let stderr = '';
    let started = false;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`serve did not start: ${stderr}`));
    }, 30_000);
    child.stderr.on('data', (d) => (stderr += d));
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          logs.push(rec);
          if (!started && rec.msg === 'flowise-billing serve listening') {
            started = true;
            clearTimeout(timer);
            resolve({
              url: String(rec.url),
              child,
              logs,
              stop: () =>
                new Promise<void>((res) => {
                  if (child.exitCode !== null) return res();
                  child.once('exit', () => res());
                  child.kill('SIGTERM');
                }),
            });
          }
        } catch {
          // not JSON: ignore
        }
      }
    });
    child.on('exit', (code) => {
      if (!started) {
        clearTimeout(timer);
        reject(new Error(`serve exited with ${code}: ${stderr}`));
      }
    });
  });
}

/** A small API client: JSON in and out, Bearer key, optional Idempotency-Key. */
export function client(base: string, token?: string) {
  return async (method: string, p: string, opts: { body?: unknown; key?: string; headers?: Record<string, string>; raw?: string } = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (token) headers.authorization = `Bearer ${token}`;
    if (opts.key) headers['idempotency-key'] = opts.key;
    if (opts.body !== undefined || opts.raw !== undefined) headers['content-type'] ??= 'application/json';
    const res = await fetch(base + p, { method, headers, body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)) });
    const text = await res.text();
    let json: any = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
    return { status: res.status, json, text, headers: res.headers };
  };
}
