import type { Command } from 'commander';
import { z } from 'zod';
import { ValidationError } from '../../errors';
import { createLogger } from '../../log';
import { WebhookDeliverer } from '../../webhooks/deliver';
import { EVENT_TYPES } from '../../webhooks/events';
import { overlapText } from '../../webhooks/secrets';
import type { OpenedServices } from '../../webhooks/open';
import { migrateWebhooks } from '../../webhooks/schema';
import type { Endpoint } from '../../webhooks/store';
import { type CliContext, withLogLevel } from '../context';
import { keyValues, table } from '../output';
import { parseInput } from '../validate';

const endpointId = z.string().regex(/^we_[a-f0-9]{32}$/, 'endpoint ids look like "we_…"');
const events = (s: string | undefined) => s?.split(',').map((x) => x.trim()).filter(Boolean);

/**
 * For list, status and deliver: an existing ledger only. A mistyped --db made
 * them create an empty ledger and answer "no endpoints" (or `deliver --watch`
 * wait on it for ever). Webhook tables are added where they are used, so a
 * ledger that never had them gets them here.
 */
function withExistingLedger<T>(cli: CliContext, fn: (s: OpenedServices) => Promise<T>): Promise<T> {
  return cli.withServices(
    async (s) => {
      await migrateWebhooks(s.ledger.dialect);
      return fn(s);
    },
    cli.target(),
    false,
  );
}

/** `endpoints`: outbound webhook endpoints (Standard Webhooks signatures) and their delivery. */
export function registerEndpoints(program: Command, cli: CliContext): void {
  const ep = program.command('endpoints').description(`outbound webhooks: endpoints, event filters, delivery (events: ${EVENT_TYPES.join(', ')})`);
  ep.command('create <url>')
    .description('add an endpoint; prints its signing secret (whsec_…) once')
    .option('--events <types>', 'comma-separated event types, or * (default)', '*')
    .option('--description <text>')
    .action(async (url: string, flags: { events: string; description?: string }) => {
      const e = await cli.withServices(({ webhooks }) => webhooks.createEndpoint({ url, events: events(flags.events), description: flags.description }));
      cli.print({ json: { ...e }, human: () => `${keyValues([['id', e.id], ['url', e.url], ['events', e.events.join(', ')], ['secret', e.secret]])}\n\nThe secret is shown now only; receivers verify webhook-signature with it.` });
    });
  ep.command('list')
    .description('endpoints and their filters')
    .action(async () => {
      const list = await withExistingLedger(cli, ({ webhooks }) => webhooks.listEndpoints());
      cli.print({
        json: { endpoints: list },
        human: () =>
          table(
            [
              { header: 'id', value: (e: Endpoint) => e.id },
              { header: 'url', value: (e) => e.url },
              { header: 'events', value: (e) => e.events.join(',') },
              { header: 'enabled', value: (e) => (e.enabled ? 'yes' : 'no') },
              // After rotate-secret: until when the replaced secret(s) still sign next to the new one.
              { header: 'old secret until', value: (e) => e.oldSecretsExpireAt.at(-1) ?? '' },
            ],
            list,
          ),
      });
    });
  ep.command('update <id>')
    .description('change an endpoint')
    .option('--url <url>')
    .option('--events <types>')
    .option('--enable')
    .option('--disable')
    .action(async (id: string, flags: { url?: string; events?: string; enable?: boolean; disable?: boolean }) => {
      const input = parseInput(z.object({ id: endpointId }), { id });
      // Without a flag it printed the endpoint as "updated" (and touched updatedAt); with both --enable won silently.
      if (flags.url === undefined && flags.events === undefined && !flags.enable && !flags.disable) {
        throw new ValidationError('endpoints update needs at least one of --url, --events, --enable, --disable', { field: 'changes' });
      }
      if (flags.enable && flags.disable) throw new ValidationError('--enable and --disable contradict each other: pass one', { field: 'enabled' });
      const enabled = flags.enable ? true : flags.disable ? false : undefined;
      const e = await cli.withServices(({ webhooks }) => webhooks.updateEndpoint(input.id, { url: flags.url, events: events(flags.events), enabled }));
      cli.print({ json: { ...e }, human: () => keyValues([['id', e.id], ['url', e.url], ['events', e.events.join(', ')], ['enabled', e.enabled ? 'yes' : 'no']]) });
    });
  ep.command('rotate-secret <id>')
    .description('give an endpoint a new signing secret (printed once); the old one keeps signing next to it during the overlap')
    .option('--overlap <duration>', 'how long the old secret still signs: digits with s, m, h or d; 0 drops it now; at most 7d', '24h')
    .action(async (id: string, flags: { overlap: string }) => {
      const input = parseInput(z.object({ id: endpointId, overlap: overlapText }), { id, overlap: flags.overlap });
      const e = await cli.withServices(({ webhooks }) => webhooks.rotateSecret(input.id, { overlapSeconds: input.overlap }));
      const old = e.oldSecretsExpireAt.length === 0 ? 'none: only the new secret signs' : e.oldSecretsExpireAt.join(', ');
      cli.print({
        json: { ...e },
        human: () =>
          `${keyValues([['id', e.id], ['secret', e.secret], ['old secrets sign until', old]])}\n\nThe new secret is shown now only. Deliveries carry a signature with each secret above, so receivers verifying with the old or the new one accept; update them before the old one stops.`,
      });
    });
  ep.command('delete <id>')
    .description('remove an endpoint and its undelivered deliveries')
    .action(async (id: string) => {
      const input = parseInput(z.object({ id: endpointId }), { id });
      await cli.withServices(({ webhooks }) => webhooks.deleteEndpoint(input.id));
      cli.print({ json: { deleted: input.id }, human: () => `deleted ${input.id}` });
    });
  // The CLI's way to resume after failures (a receiver down past 20 attempts, or a 410 that disabled its endpoint):
  // only the API had one (POST /v1/webhooks/endpoints/{id}/retry).
  ep.command('retry [id]')
    .description('queue failed deliveries again, due now: of one endpoint, or of all')
    .action(async (id: string | undefined) => {
      const input = parseInput(z.object({ id: endpointId.optional() }), { id });
      const requeued = await cli.withServices(async ({ webhooks }) => {
        if (input.id) await webhooks.getEndpoint(input.id);
        return webhooks.retryFailed(input.id);
      });
      cli.print({ json: { requeued }, human: () => `requeued ${requeued} failed deliver${requeued === 1 ? 'y' : 'ies'}` });
    });
  ep.command('status')
    .description('deliveries pending (to enabled endpoints), delivered, failed, paused (held by disabled endpoints)')
    .action(async () => {
      const s = await withExistingLedger(cli, ({ webhooks }) => webhooks.deliveryCounts());
      cli.print({
        json: { ...s },
        human: () =>
          keyValues([
            ['pending', s.pending],
            ['delivered', s.delivered],
            ['failed', s.failed],
            ['oldest pending (ms)', s.oldestPendingMs],
            // Held by disabled endpoints: not sent, so not in pending or the lag, but not forgotten either.
            ['paused (disabled endpoints)', s.paused],
            ...s.pausedByEndpoint.map((p) => [`paused for ${p.endpointId}`, `${p.pending} (enable it and they are sent)`] as const),
            ...s.lastErrors.map((e) => [`error ${e.eventId} → ${e.endpointId}`, `${e.error} (${e.attempts} attempts, ${e.status})`] as const),
          ]),
      });
    });
  withLogLevel(ep.command('deliver'))
    .description('deliver due webhooks once (default) or keep delivering (--watch; Ctrl-C stops)')
    .option('--watch', 'keep running')
    .action(async (flags: { watch?: boolean; logLevel: string }) => {
      // One JSON log line per attempt (src/log.ts, as serve); on stderr without --watch, where stdout has the pass's result.
      const logger = flags.watch ? cli.logger('webhook-delivery', flags.logLevel) : createLogger({ component: 'webhook-delivery', level: 'info', fd: 2 });
      await withExistingLedger(cli, async ({ ledger }) => {
        const log = (level: 'info' | 'warn', msg: string, fields: Record<string, unknown>) => logger[level](fields, msg);
        const d = new WebhookDeliverer(ledger.dialect, { log });
        if (!flags.watch) {
          const r = await d.deliverDue();
          cli.print({ json: { ...r }, human: () => keyValues([['attempted', r.attempted], ['delivered', r.delivered], ['retrying', r.retrying], ['failed', r.failed]]) });
          return;
        }
        const stop = () => d.stop();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
        logger.info({}, 'delivering webhooks');
        await d.run(1_000);
        logger.info({}, 'stopped');
        if (cli.json) cli.print({ json: { stopped: true }, human: () => 'stopped' });
      });
    });
}
