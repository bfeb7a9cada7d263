/**
 * deploy/ cannot run here (no Docker), so it is kept in lockstep with the topology the queue e2e test
 * runs (test/e2e/queue-env.mjs): same variables for main and every worker, same wiring, same Flowise.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
// @ts-expect-error plain ESM helper without types
import { QUEUE_ENV_NAMES, queueModeEnv } from './queue-env.mjs';
// @ts-expect-error plain ESM helper without types
import { FLOWISE_VERSION } from './flowise-env.mjs';

const DEPLOY = path.resolve(__dirname, '..', '..', 'deploy');
type Service = { image?: string; build?: unknown; environment?: Record<string, string>; entrypoint?: string[]; deploy?: { replicas?: number }; depends_on?: Record<string, unknown> };

/** deploy/.env.example as a map; compose reads the same names from deploy/.env. */
const dotenv = Object.fromEntries(
  fs
    .readFileSync(path.join(DEPLOY, '.env.example'), 'utf8')
    .split('\n')
    .filter((l) => /^[A-Z_]+=/.test(l))
    .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
);

/** Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} against .env.example; an unset required variable fails. */
function interpolate(v: string): string {
  return v.replace(/\$\{([A-Z_]+)(?::([-?])([^}]*))?\}/g, (_, name: string, op?: string, arg?: string) => {
    if (dotenv[name] !== undefined && dotenv[name] !== '') return dotenv[name]!;
    if (op === '-') return arg ?? '';
    throw new Error(`compose needs ${name}, which .env.example does not set${op === '?' ? ` (${arg})` : ''}`);
  });
}

const compose = parse(fs.readFileSync(path.join(DEPLOY, 'compose.yaml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
const env = (s: string) => Object.fromEntries(Object.entries(compose.services[s]!.environment ?? {}).map(([k, v]) => [k, interpolate(String(v))]));

describe('deploy/: compose file and Dockerfile match the tested queue topology', () => {
  it('has main, workers (at least two), Redis and PostgreSQL', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['flowise', 'postgres', 'redis', 'worker']);
    expect(compose.services.flowise!.entrypoint).toEqual(['flowise', 'start']);
    expect(compose.services.worker!.entrypoint).toEqual(['flowise', 'worker']);
    expect(compose.services.worker!.deploy?.replicas).toBeGreaterThanOrEqual(2);
    // the workers run the image main builds: both carry the plugin
    expect(compose.services.worker!.image).toBe(compose.services.flowise!.image);
  });

  it('main and workers set every queue-mode variable the test script sets, to the same values', () => {
    const main = env('flowise');
    const worker = env('worker');
    for (const name of QUEUE_ENV_NAMES as string[]) {
      expect(main, `main lacks ${name}`).toHaveProperty(name);
      expect(worker[name], `worker's ${name} differs from main's`).toBe(main[name]);
    }
    // and nothing queue-related that the script does not know about
    const extra = Object.keys(worker).filter((k) => !(QUEUE_ENV_NAMES as string[]).includes(k));
    expect(extra).toEqual([]);
  });

  it('the fixed values are the script’s, and the hosts are the compose services', () => {
    const main = env('flowise');
    const script = queueModeEnv({ queueName: 'q', redisUrl: 'redis://h:1', db: { host: 'h', port: 1, user: 'u', name: 'n' }, secretKeyPath: '/s', secretKey: 'k', ledgerUrl: 'postgres://x' });
    for (const k of ['MODE', 'DATABASE_TYPE', 'DISABLE_FLOWISE_TELEMETRY', 'REMOVE_ON_AGE', 'REMOVE_ON_COUNT']) expect(main[k], k).toBe(script[k]);
    expect(new URL(main.REDIS_URL!).hostname).toBe('redis');
    expect(main.DATABASE_HOST).toBe('postgres');
    const pg = compose.services.postgres!.environment!;
    expect(main.DATABASE_USER).toBe(pg.POSTGRES_USER);
    expect(main.DATABASE_NAME).toBe(pg.POSTGRES_DB);
    expect(main.DATABASE_PASSWORD).toBe(interpolate(pg.POSTGRES_PASSWORD!));
    // the ledger is PostgreSQL on the same server, in a database the init script creates
    const ledger = new URL(main.FLOWISE_BILLING_DB!);
    expect(ledger.protocol).toBe('postgres:');
    expect(ledger.hostname).toBe('postgres');
    const init = fs.readdirSync(path.join(DEPLOY, 'initdb')).map((f) => fs.readFileSync(path.join(DEPLOY, 'initdb', f), 'utf8')).join('\n');
    expect(init).toContain(`CREATE DATABASE ${ledger.pathname.slice(1)};`);
    expect(Number(main.WORKER_CONCURRENCY)).toBeGreaterThan(0);
  });

  it('the Dockerfile derives from the Flowise version the tests run and installs the plugin with its installer', () => {
    const docker = fs.readFileSync(path.join(DEPLOY, 'Dockerfile'), 'utf8');
    expect(docker).toMatch(new RegExp(`^FROM flowiseai/flowise:${FLOWISE_VERSION.replace(/\./g, '\\.')}$`, 'm'));
    expect(docker).toMatch(/flowise-billing install --flowise/);
  });
});
