import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

export const ROOT = path.resolve(__dirname, '..', '..');

export interface Worker {
  child: ChildProcess;
  /** Resolves once the script printed "ready". */
  ready: Promise<void>;
  /** The last line the script printed, once it exited 0. */
  result: Promise<string>;
  /** Everything printed so far. */
  output(): string;
}

/** Spawns a node script from test/support. Scripts print "ready" when set up, wait for a line on stdin, then work. */
export function spawnWorker(script: string, args: string[]): Worker {
  const child = spawn(process.execPath, [path.join(ROOT, 'test', 'support', script), ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let markReady: () => void;
  const ready = new Promise<void>((resolve) => (markReady = resolve));
  child.stdout!.on('data', (d) => {
    out += d;
    if (out.startsWith('ready\n')) markReady();
  });
  child.stderr!.on('data', (d) => (err += d));
  const result = new Promise<string>((resolve, reject) => {
    child.on('exit', (code, signal) =>
      code === 0 ? resolve(out.trim().split('\n').at(-1) ?? '') : reject(new Error(`${script} exited ${code ?? signal}: ${err.slice(0, 2000)}`)),
    );
  });
  ready.catch(() => undefined);
  return { child, ready, result, output: () => out };
}

/** Starts every worker's work at the same moment. */
export async function startTogether(workers: Worker[]): Promise<void> {
  await Promise.race([Promise.all(workers.map((w) => w.ready)), Promise.all(workers.map((w) => w.result)).then(() => undefined)]);
  for (const w of workers) w.child.stdin!.end('go\n');
}

export interface QuotaWorkerOutcome {
  admitted: Array<{ session: 'new' | 'existing'; sessionId: string }>;
  refused: number;
  errors: string[];
}

/**
 * Admissions from one OS process per conversation prefix (quota-worker.cjs), started together: each runs
 * `perProcess` admissions at once, of `<prefix>-<i>` conversations or, for the prefix `same`, of one.
 */
export async function admitFromProcesses(target: string, customerId: string, prefixes: string[], perProcess: number): Promise<QuotaWorkerOutcome> {
  const workers = prefixes.map((p) => spawnWorker('quota-worker.cjs', [target, customerId, p, String(perProcess)]));
  await startTogether(workers);
  const outs = (await Promise.all(workers.map((w) => w.result))).map((l) => JSON.parse(l) as QuotaWorkerOutcome);
  return { admitted: outs.flatMap((o) => o.admitted), refused: outs.reduce((s, o) => s + o.refused, 0), errors: outs.flatMap((o) => o.errors) };
}
