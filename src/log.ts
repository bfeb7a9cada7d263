import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/**
 * Fields whose values never reach a log line, at the top level or one object
 * down (pino's fast-redact needs explicit paths). Nothing here logs a secret
 * on purpose; this is the net under a field added later by mistake.
 */
const SECRET_FIELDS = ['secret', 'secretKey', 'webhookSecret', 'apiKey', 'token', 'password', 'authorization', 'cookie', 'connectionString'];
const REDACT = [
  ...SECRET_FIELDS.flatMap((f) => [f, `*.${f}`]),
  // Request headers as fastify's serializer prints them.
  'req.headers.authorization',
  'req.headers.cookie',
  'req.headers["stripe-signature"]',
  'req.headers["idempotency-key"]',
];

/** An API key pasted into a URL by mistake (`?key=fbk_…`): masked where a request's URL is logged. */
const API_KEY_IN_URL = /fbk_[A-Za-z0-9_-]+/g;

/** fastify's request log field (method, url, host, remote address and port), with any API key in the URL masked. */
function requestField(req: { method?: string; url?: string; host?: string; ip?: string; socket?: { remotePort?: number } }) {
  return { method: req.method, url: req.url?.replace(API_KEY_IN_URL, 'fbk_[redacted]'), host: req.host, remoteAddress: req.ip, remotePort: req.socket?.remotePort };
}

export interface LoggerOptions {
  readonly level?: LogLevel;
  /** Which long-running command logs (serve, stripe-sync, stripe-webhooks, webhook-delivery): a field on every line. */
  readonly component: string;
  /** File descriptor: 1 (stdout, the default) or 2 (stderr, when stdout carries a command's --json result). */
  readonly fd?: 1 | 2;
}

/**
 * The JSON-lines logger of every long-running command (`serve`, `stripe sync
 * --watch`, `webhooks serve`, `endpoints deliver --watch`): pino, one object
 * per line with `level` (number), `time` (epoch ms), `component` and `msg`.
 * Written synchronously so the last lines before an exit are not lost.
 */
export function createLogger(opts: LoggerOptions): Logger {
  return pino(
    {
      level: opts.level ?? 'info',
      base: { pid: process.pid, component: opts.component },
      redact: { paths: REDACT, censor: '[redacted]' },
      // fastify prefers its logger's own `req` serializer over its default.
      serializers: { req: requestField },
    },
    pino.destination({ fd: opts.fd ?? 1, sync: true }),
  );
}

/** An error as a log field: its name, code and message only (a stack or a cause may carry a URL with a password). */
export function errorField(e: unknown): { name: string; code?: string; message: string } {
  if (!(e instanceof Error)) return { name: 'Error', message: String(e) };
  const code = (e as { code?: unknown }).code;
  return { name: e.name, ...(typeof code === 'string' ? { code } : {}), message: e.message };
}

/** Fields of a log line; `level` defaults to info. */
export type LogFields = { readonly level?: 'info' | 'warn' | 'error' } & Record<string, unknown>;

/**
 * How modules without a pino dependency log (the Stripe adapter's progress
 * and webhook lines): a human message, and the same facts as fields. Callers
 * that only want the text (tests, `--once` progress) ignore the fields.
 */
export type LineLog = (msg: string, fields?: LogFields) => void;

/** A LineLog writing JSON lines to `logger`. */
export function lineLog(logger: Logger): LineLog {
  return (msg, fields = {}) => {
    const { level = 'info', ...rest } = fields;
    logger[level](rest, msg);
  };
}
