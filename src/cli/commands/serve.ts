import type { Command } from 'commander';
import { z } from 'zod';
import { startServer } from '../../server/serve';
import { DEFAULT_RETRY } from '../../webhooks/retry';
import type { CliContext } from '../context';
import { redactTarget, withLogLevel } from '../context';
import { integer, parseInput } from '../validate';

/** `serve`: the HTTP API, dashboard, metrics and webhook delivery in one long-running process. */
export function registerServe(program: Command, cli: CliContext): void {
  withLogLevel(program.command('serve'))
    .description('run the HTTP API, dashboard (/), OpenAPI (/openapi.json), /metrics and /healthz; delivers webhooks (Ctrl-C stops)')
    .option('--port <port>', 'port to listen on', '8787')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--no-deliver', 'do not deliver webhooks from this process (run `endpoints deliver --watch` elsewhere)')
    .option('--body-limit <bytes>', 'largest request body', '65536')
    .option('--rate-limit <n>', 'requests per minute per API key', '6000')
    .option('--cors <origins>', 'comma-separated origins allowed to call the API from a browser (default: none)')
    .option('--webhook-retry-base <ms>', 'first webhook retry delay; doubles per attempt up to an hour, with jitter', '5000')
    .option('--webhook-poll <ms>', 'pause between webhook delivery passes when nothing is due', '1000')
    .option('--secure-cookies', 'mark the dashboard cookie Secure (serve behind HTTPS)')
    .action(async (flags: { port: string; host: string; deliver: boolean; bodyLimit: string; rateLimit: string; cors?: string; logLevel: string; secureCookies?: boolean; webhookRetryBase: string; webhookPoll: string }) => {
      const f = parseInput(
        z.object({
          port: integer('port', 0, 65_535),
          bodyLimit: integer('body limit', 1024, 10 * 1024 * 1024),
          rateLimit: integer('rate limit', 1, 10_000_000),
          retryBase: integer('webhook retry base', 10, 3_600_000),
          poll: integer('webhook poll', 10, 60_000),
          cors: z.string().url('--cors takes absolute origins such as https://app.example.com').array().optional(),
        }),
        { retryBase: flags.webhookRetryBase, poll: flags.webhookPoll, port: flags.port, bodyLimit: flags.bodyLimit, rateLimit: flags.rateLimit, cors: flags.cors?.split(',').map((s) => s.trim()).filter(Boolean) },
      );
      const target = cli.target();
      const server = await startServer({
        target,
        host: flags.host,
        port: f.port,
        deliver: flags.deliver,
        delivery: { retry: { ...DEFAULT_RETRY, baseMs: f.retryBase } },
        pollMs: f.poll,
        bodyLimit: f.bodyLimit,
        rateLimitPerMinute: f.rateLimit,
        corsOrigins: f.cors,
        secureCookies: flags.secureCookies ?? false,
        log: cli.logger('serve', flags.logLevel),
        tokenSecret: cli.io.env.FLOWISE_BILLING_TOKEN_SECRET || undefined,
      });
      server.app.log.info({ url: server.url, ledger: redactTarget(target), backend: server.deps.ledger.backend, deliver: flags.deliver }, 'flowise-billing serve listening');
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
    });
}
