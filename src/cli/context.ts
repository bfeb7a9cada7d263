import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import { z } from 'zod';
import { BillingError, isBillingError, ValidationError } from '../errors';
import { defaultLedgerLocation, isPostgresUrl, ledgerTarget } from '../ledger/open';
import { redactUrl } from '../ledger/redact';
import type { Ledger } from '../ledger/types';
import { createLogger, LOG_LEVELS, type Logger } from '../log';
import type { QuotaService } from '../quota/service';
import { type OpenedServices, openWithEvents } from '../webhooks/open';
import { jsonLine, type Io, type Rendered, renderDelimited, renderMode } from './output';
import { dbTarget } from './validate';

/** Every CLI mutation is audited as this actor. */
export const CLI_ACTOR = 'cli';

/** What every command can reach: the global options, the ledger, and the printer. */
export class CliContext {
  /**
   * The exit code of a command that ran to the end: 0, or 1 when its answer is
   * "not ok" (reconcile found differences, doctor found problems). `run()`
   * returns it; nothing else sets `process.exitCode`.
   */
  exitCode = 0;

  constructor(
    readonly io: Io,
    /** --json, known before parsing so even usage errors come out as JSON. */
    readonly json: boolean,
    private readonly globals: () => { db?: string },
  ) {}

  /** `--db` when given on the command line, else undefined. */
  explicitDb(): string | undefined {
    const db = this.globals().db;
    return db === undefined ? undefined : checkTarget(db);
  }

  /** `--db`, else FLOWISE_BILLING_DB, else the Flowise home's billing.sqlite. */
  target(): string {
    return this.explicitDb() ?? checkTarget(defaultLedgerLocation(this.io.env));
  }

  /**
   * Opens the ledger and quota service with the outbound-event hooks (the
   * same builder serve and the Flowise plugin use), runs `fn`, and always
   * closes them: a CLI top-up, charge, invoice close or admission raises its
   * webhooks like any other.
   */
  async withServices<T>(fn: (s: OpenedServices) => Promise<T>, target: string = this.target(), create = true): Promise<T> {
    const services = await openCliServices(target, create, (e) => this.io.err(`warning: an outbound webhook event could not be recorded: ${e instanceof Error ? e.message : String(e)}\n`));
    try {
      return await fn(services);
    } finally {
      await services.close().catch(() => undefined);
    }
  }

  /** Opens the ledger (creating and migrating it), runs `fn`, and always closes it. */
  withLedger<T>(fn: (ledger: Ledger) => Promise<T>, target: string = this.target(), create = true): Promise<T> {
    return this.withServices((s) => fn(s.ledger), target, create);
  }

  /** For commands that only read: a missing ledger is LEDGER_NOT_FOUND ("no ledger at …"); nothing is created. */
  readLedger<T>(fn: (ledger: Ledger) => Promise<T>): Promise<T> {
    return this.withLedger(fn, this.target(), false);
  }

  /** The quota service (with the event hooks) for a command; `read` opens an existing ledger only. */
  withQuota<T>(fn: (quota: QuotaService) => Promise<T>, opts: { read?: boolean } = {}): Promise<T> {
    return this.withServices((s) => fn(s.quota), this.target(), !opts.read);
  }

  /** Records a completed command's verdict: exit 1 when not ok. */
  verdict(ok: boolean): void {
    if (!ok) this.exitCode = 1;
  }

  /**
   * The JSON-lines logger of a long-running command (src/log.ts, as serve's):
   * stdout, or stderr under --json, where stdout carries the one result object.
   */
  logger(component: string, level: string | undefined): Logger {
    const r = z.enum(LOG_LEVELS).safeParse(level ?? 'info');
    if (!r.success) throw new ValidationError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`, { issues: [{ path: 'logLevel', message: 'unknown level' }] });
    return createLogger({ component, level: r.data, fd: this.json ? 2 : 1 });
  }

  print(r: Rendered): void {
    if (this.json) this.io.out(jsonLine(r.json));
    else if (renderMode() === 'csv' || renderMode() === 'tsv') this.io.out(`${renderDelimited(r.human)}\n`);
    else this.io.out(`${r.human()}\n`);
  }
}

/** Adds `--log-level` to a long-running command (CliContext.logger validates it); `when` prefixes the help, e.g. "with --watch: ". */
export function withLogLevel(cmd: Command, when = ''): Command {
  return cmd.option('--log-level <level>', `${when}JSON log lines at this level and above (${LOG_LEVELS.join(', ')})`, 'info');
}

/** Validates a ledger location without echoing it (a URL may carry a password). */
function checkTarget(target: string): string {
  const r = dbTarget.safeParse(target);
  if (!r.success) {
    const issues = r.error.issues.map((i) => ({ path: 'db', message: i.message }));
    throw new ValidationError(`Invalid input: ${issues.map((i) => i.message).join('; ')}`, { issues });
  }
  ledgerTarget(r.data); // refuses unknown schemes and bad URLs, naming what is wrong, never the URL
  return r.data;
}

export function redactTarget(target: string): string {
  return isPostgresUrl(target) ? redactUrl(target) : target;
}

async function openCliServices(target: string, create: boolean, onEventError: (e: unknown) => void): Promise<OpenedServices> {
  try {
    return await openWithEvents(target, { actor: CLI_ACTOR, create, onEventError });
  } catch (e) {
    if (isBillingError(e)) throw e;
    const message = e instanceof Error ? e.message : String(e);
    throw new BillingError('DATABASE_ERROR', `Cannot open the ledger at ${redactTarget(target)}: ${message}`, { location: redactTarget(target) });
  }
}

/**
 * Without --key a CLI invocation is its own request, so it gets a fresh key;
 * the key is printed so the operator can replay exactly this request.
 */
export function keyOrNew(key: string | undefined, operation: string): string {
  return key ?? `cli:${operation}:${randomUUID()}`;
}

/**
 * Whether the ledger answered with the stored result of an earlier request with
 * the same key: that result was created before this invocation started.
 */
export function isReplay(createdAt: string, startedAt: number): boolean {
  return Date.parse(createdAt) < startedAt;
}
