import fs from 'node:fs';
import path from 'node:path';
import { isBillingError } from '../errors';
import { MIN_SECRET_BYTES } from '../identity/token';
import { type Problem } from '../installer';
import { ledgerTarget, openLedger } from '../ledger/open';
import { sqliteCheckpointMode } from '../ledger/sqlite';

/**
 * The checks `doctor` runs beside the installer's: can the ledger be reached,
 * is the token secret long enough, does the Stripe key work. Each problem says
 * what to do; nothing is created or changed (the ledger opens in no-create mode). No ledger yet where
 * the first write makes one is a fresh install: reported, not a problem.
 */

export interface EnvironmentCheck {
  readonly name: 'ledger' | 'token secret' | 'stripe key';
  /** `not created`: no ledger there yet, which is normal before the first write (information, not a problem). */
  readonly status: 'ok' | 'problem' | 'not set' | 'not created';
  readonly detail: string;
}

export interface EnvironmentReport {
  readonly checks: EnvironmentCheck[];
  readonly problems: Problem[];
}

export interface EnvironmentOptions {
  /** Ledger location (already validated by the CLI). */
  readonly db: string;
  readonly env: NodeJS.ProcessEnv;
  /** Ask Stripe whether the key is accepted (one read-only GET /v1/customers?limit=1). */
  readonly stripeOnline: boolean;
}

/** A SQLite ledger in MODE=queue: a worker in another container or host would open a file of its own. */
function queueModeProblem(display: string): Problem {
  return {
    code: 'SQLITE_IN_QUEUE_MODE',
    message: `MODE=queue with a SQLite ledger (${display}): a worker in another container or host opens a file of its own, with its own balances`,
    fix: 'give main and every worker the same PostgreSQL ledger: FLOWISE_BILLING_DB=postgres://… (or the URL in the Billing Ledger credential)',
  };
}

/** The nearest folder that exists on the way to `file`: the one the first write creates the rest in. */
function nearestFolder(file: string): string {
  let dir = path.dirname(path.resolve(file));
  while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  return dir;
}

/**
 * No ledger yet where one is created on the first write (a SQLite file that does not exist, a PostgreSQL
 * database or schema without the ledger tables): a fresh install, information and not a problem, unless
 * that first write could not create it (the folder is missing and cannot be made, or is read-only).
 */
function notCreatedYet(db: string, env: NodeJS.ProcessEnv, problems: Problem[]): EnvironmentCheck | null {
  const t = ledgerTarget(db);
  if (t.kind === 'sqlite' && fs.existsSync(t.path)) return null; // a file that is not a ledger: a real problem
  if (t.kind === 'memory') return null;
  const detail = `no ledger at ${t.display} yet: the first write creates it (a node's first run, \`customers create\`, \`serve\`, or \`migrate\` now)`;
  if (t.kind === 'sqlite') {
    const dir = nearestFolder(t.path);
    let writable = false;
    try {
      writable = fs.statSync(dir).isDirectory();
      fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    } catch {
      writable = false;
    }
    if (!writable) {
      problems.push({
        code: 'LEDGER_NOT_CREATABLE',
        message: `no ledger at ${t.display} yet, and it cannot be created: ${dir} is not a folder this user can write`,
        fix: `point --db / FLOWISE_BILLING_DB at a writable location, or give this user write access to ${dir}`,
      });
      return { name: 'ledger', status: 'problem', detail };
    }
    if (env.MODE === 'queue') {
      problems.push(queueModeProblem(t.display));
      return { name: 'ledger', status: 'problem', detail };
    }
  }
  return { name: 'ledger', status: 'not created', detail };
}

async function checkLedger(db: string, env: NodeJS.ProcessEnv, problems: Problem[]): Promise<EnvironmentCheck> {
  const display = ledgerTarget(db).display;
  try {
    const ledger = await openLedger(db, { create: false, actor: 'doctor' });
    try {
      const customers = await ledger.countCustomers();
      // The mode was validated by the open; said here so an operator sees which one is in effect.
      const mode = ledger.backend === 'sqlite' ? `, WAL checkpoint ${sqliteCheckpointMode()}` : '';
      const detail = `${ledger.backend} at ${display}, ${customers} customer(s)${mode}`;
      if (ledger.backend === 'sqlite' && env.MODE === 'queue') {
        problems.push(queueModeProblem(display));
        return { name: 'ledger', status: 'problem', detail };
      }
      return { name: 'ledger', status: 'ok', detail };
    } finally {
      await ledger.close().catch(() => undefined);
    }
  } catch (e) {
    const code = isBillingError(e) ? e.code : 'DATABASE_ERROR';
    const fresh = code === 'LEDGER_NOT_FOUND' ? notCreatedYet(db, env, problems) : null;
    if (fresh) return fresh;
    const message = e instanceof Error ? e.message : String(e);
    problems.push({
      code,
      message,
      fix:
        code === 'LEDGER_NOT_FOUND'
          ? `create it with \`flowise-billing --db <same location> migrate\`, or point --db / FLOWISE_BILLING_DB at the existing ledger`
          : code === 'VALIDATION_ERROR'
            ? 'a setting the ledger reads is wrong (the message names it): correct or unset that environment variable'
            : 'check that the database server is running and reachable, and the user, password and database name in the URL',
    });
    return { name: 'ledger', status: 'problem', detail: message };
  }
}

function checkSecret(env: NodeJS.ProcessEnv, problems: Problem[]): EnvironmentCheck {
  const s = env.FLOWISE_BILLING_TOKEN_SECRET;
  if (!s) return { name: 'token secret', status: 'not set', detail: 'FLOWISE_BILLING_TOKEN_SECRET is not set (needed only for `token sign|verify`)' };
  const bytes = Buffer.byteLength(s, 'utf8');
  if (bytes < MIN_SECRET_BYTES) {
    problems.push({
      code: 'TOKEN_SECRET_TOO_SHORT',
      message: `FLOWISE_BILLING_TOKEN_SECRET is ${bytes} bytes; billing tokens need at least ${MIN_SECRET_BYTES}`,
      fix: 'generate one with `openssl rand -base64 48` and set the same value in the Billing Ledger credential',
    });
    return { name: 'token secret', status: 'problem', detail: `${bytes} bytes (< ${MIN_SECRET_BYTES})` };
  }
  return { name: 'token secret', status: 'ok', detail: `${bytes} bytes` };
}

async function checkStripe(env: NodeJS.ProcessEnv, online: boolean, problems: Problem[]): Promise<EnvironmentCheck> {
  const key = env.STRIPE_SECRET_KEY;
  if (!key) return { name: 'stripe key', status: 'not set', detail: 'STRIPE_SECRET_KEY is not set (needed only for Stripe sync)' };
  const kind = /^sk_(test|live)_[A-Za-z0-9]{8,}$/.exec(key)?.[1] ?? /^rk_(test|live)_[A-Za-z0-9]{8,}$/.exec(key)?.[1];
  if (!kind) {
    problems.push({
      code: 'STRIPE_KEY_MALFORMED',
      message: 'STRIPE_SECRET_KEY does not look like a Stripe secret key (sk_test_…, sk_live_… or a restricted rk_… key)',
      fix: 'copy the secret key from the Stripe dashboard (Developers → API keys); a publishable pk_… key does not work here',
    });
    return { name: 'stripe key', status: 'problem', detail: 'malformed' };
  }
  if (!online) return { name: 'stripe key', status: 'ok', detail: `${kind} key, well-formed (not checked with Stripe; add --online)` };
  try {
    // Loaded only here: doctor without --online never loads the Stripe SDK.
    const { createStripeClient } = require('../stripe/client') as typeof import('../stripe/client');
    await createStripeClient({ timeoutMs: 10_000 }, env).customers.list({ limit: 1 });
    return { name: 'stripe key', status: 'ok', detail: `${kind} key, accepted by Stripe` };
  } catch (e) {
    const status = (e as { statusCode?: number }).statusCode;
    const rejected = status === 401 || status === 403;
    problems.push({
      code: rejected ? 'STRIPE_AUTH_FAILED' : 'STRIPE_UNAVAILABLE',
      message: rejected ? `Stripe refused STRIPE_SECRET_KEY (HTTP ${status})` : `Stripe could not be reached${env.STRIPE_API_BASE ? ' at STRIPE_API_BASE' : ''}`,
      fix: rejected ? 'the key was revoked, rolled or belongs to another account: copy the current secret key from the Stripe dashboard' : 'check the network path to Stripe (proxy, firewall) or STRIPE_API_BASE',
    });
    return { name: 'stripe key', status: 'problem', detail: rejected ? 'refused by Stripe' : 'Stripe unreachable' };
  }
}

export async function checkEnvironment(opts: EnvironmentOptions): Promise<EnvironmentReport> {
  const problems: Problem[] = [];
  const checks = [await checkLedger(opts.db, opts.env, problems), checkSecret(opts.env, problems), await checkStripe(opts.env, opts.stripeOnline, problems)];
  return { checks, problems };
}
