import { spawn } from 'node:child_process';
import path from 'node:path';

/** The built CLI as a real subprocess; `npm test` builds first (run `npm run build` before a file alone). */
export const CLI_MAIN = path.resolve(__dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<CliResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  for (const k of ['MODE', 'FLOWISE_BILLING_DB', 'FLOWISE_BILLING_DEBUG', 'FLOWISE_BILLING_SQLITE_CHECKPOINT', 'FLOWISE_BILLING_TOKEN_SECRET', 'STRIPE_SECRET_KEY', 'STRIPE_API_BASE', 'COLUMNS']) {
    if (opts.env?.[k] === undefined) delete env[k];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI_MAIN, ...args], { cwd: opts.cwd ?? path.dirname(CLI_MAIN), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** --json: exactly one JSON object on stdout. */
export async function runJson(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}): Promise<{ code: number | null; value: Record<string, any>; stderr: string }> {
  const r = await runCli([...args, '--json'], opts);
  const lines = r.stdout.trimEnd().split('\n');
  if (lines.length !== 1) throw new Error(`expected one JSON line from ${args.join(' ')}, got: ${r.stdout}\n${r.stderr}`);
  return { code: r.code, value: JSON.parse(r.stdout) as Record<string, any>, stderr: r.stderr };
}
