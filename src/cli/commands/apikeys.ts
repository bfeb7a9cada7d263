import type { Command } from 'commander';
import { z } from 'zod';
import { ApiKeyStore, type ApiKey, SCOPES } from '../../server/apikeys';
import { migrateServer } from '../../server/schema';
import type { Ledger } from '../../ledger/types';
import type { CliContext } from '../context';
import { keyValues, table } from '../output';
import { parseInput } from '../validate';

async function store(ledger: Ledger): Promise<ApiKeyStore> {
  await migrateServer(ledger.dialect);
  return new ApiKeyStore(ledger.dialect);
}

const keyJson = (k: ApiKey) => ({ ...k });

/** `apikeys`: bearer keys for `serve` (read ⊂ write ⊂ admin), stored hashed. */
export function registerApikeys(program: Command, cli: CliContext): void {
  const keys = program.command('apikeys').description('API keys for `serve`: create (shown once), list, revoke');
  keys
    .command('create')
    .description('create a key; its secret is printed once and stored only as a hash')
    .requiredOption('--scope <scope>', `one of ${SCOPES.join(', ')}`)
    .option('--name <name>', 'what the key is for')
    .action(async (flags: { scope: string; name?: string }) => {
      const input = parseInput(z.object({ scope: z.enum(SCOPES), name: z.string().min(1).max(100).optional() }), flags);
      const k = await cli.withLedger(async (ledger) => (await store(ledger)).create(input));
      cli.print({
        json: keyJson(k),
        human: () => `${keyValues([['id', k.id], ['scope', k.scope], ['name', k.name ?? '']])}\n\n${k.token}\n\nStore it now: it is not shown again.`,
      });
    });
  keys
    .command('list')
    .description('every key with its scope and state (never the secret)')
    .action(async () => {
      const list = await cli.withLedger(async (ledger) => (await store(ledger)).list());
      cli.print({
        json: { keys: list.map(keyJson) },
        human: () =>
          table(
            [
              { header: 'id', value: (k: ApiKey) => k.id },
              { header: 'scope', value: (k) => k.scope },
              { header: 'name', value: (k) => k.name ?? '' },
              { header: 'created', value: (k) => k.createdAt },
              { header: 'revoked', value: (k) => k.revokedAt ?? '' },
            ],
            list,
          ),
      });
    });
  keys
    .command('revoke <id>')
    .description('revoke a key (a running serve refuses it within 2 seconds)')
    .action(async (id: string) => {
      const input = parseInput(z.object({ id: z.string().regex(/^[a-f0-9]{16}$/, 'API key ids are 16 hex digits') }), { id });
      const k = await cli.withLedger(async (ledger) => (await store(ledger)).revoke(input.id));
      cli.print({ json: keyJson(k), human: () => `revoked ${k.id}` });
    });
}
