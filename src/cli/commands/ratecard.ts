import type { Command } from 'commander';
import { z } from 'zod';
import type { RateCardRecord } from '../../ledger/types';
import { formatScaled, formatSparks, NANOS_PER_SPARK, type Nanos, USD_DECIMALS } from '../../money';
import { CHARGE_TYPES, type Rate, type RateCard, readRateCardFile, RESOURCES } from '../../pricing/ratecard';
import { CLI_ACTOR, type CliContext } from '../context';
import { heading, keyValues, shortTime, table } from '../output';
import { parseInput, rateCardVersion, text } from '../validate';

const exactUsd = (n: Nanos) => `$${formatScaled(n, USD_DECIMALS, 2)}`;

/** "$0.0035 per MB + $0.01", "100 Sparks ($0.10) per 1000 token". */
function describeRate(r: Rate, sparks = false): string {
  const plural = /^[a-z]+$/i.test(r.unit) && !r.unit.endsWith('s') ? `${r.unit}s` : r.unit;
  const per = r.per === 1n ? `per ${r.unit}` : `per ${r.per} ${plural}`;
  const price = sparks && r.nanos % NANOS_PER_SPARK === 0n ? `${formatSparks(r.nanos)} Sparks (${exactUsd(r.nanos)})` : exactUsd(r.nanos);
  return `${price} ${per}${r.fixed !== 0n ? ` + ${exactUsd(r.fixed)}` : ''}`;
}

function recordJson(r: RateCardRecord): Record<string, unknown> {
  return { version: r.version, active: r.active, importedAt: r.importedAt, activatedAt: r.activatedAt };
}

/** The card as people read it: ChargeTypes, resource rates and model prices. */
export function rateCardTables(card: RateCard): string {
  const chargeTypes = table(
    [
      { header: 'ChargeType', value: (c: (typeof CHARGE_TYPES)[number]) => c },
      { header: 'price', value: (c) => describeRate(card.chargeTypes[c]) },
    ],
    CHARGE_TYPES,
    { indent: '  ' },
  );
  const resources = table(
    [
      { header: 'resource', value: (r: (typeof RESOURCES)[number]) => r },
      { header: 'price', value: (r) => describeRate(card.resources[r], true) },
    ],
    RESOURCES,
    { indent: '  ' },
  );
  const models = table(
    [
      { header: 'model', value: (m: [string, { input: Rate; output: Rate }]) => (m[0] === '*' ? '* (any other)' : m[0]) },
      { header: 'input / 1K tokens', align: 'right', value: (m) => exactUsd(m[1].input.nanos) },
      { header: 'output / 1K tokens', align: 'right', value: (m) => exactUsd(m[1].output.nanos) },
    ],
    [...card.models.entries()],
    { indent: '  ' },
  );
  return `ChargeTypes\n${chargeTypes}\n\nResource rates (1 Spark = $0.001)\n${resources}\n\nModel token prices\n${models}`;
}

export function registerRatecard(program: Command, cli: CliContext): void {
  const ratecard = program.command('ratecard').description('versioned price lists: show, list, import, activate');

  ratecard
    .command('show')
    .description('the active rate card (or --version) with its prices')
    .option('--version <version>', 'an imported version instead of the active one')
    .action(async (opts: { version?: string }) => {
      const input = parseInput(z.object({ version: rateCardVersion.optional() }), opts);
      const { card, record } = await cli.withLedger(async (ledger) => {
        const card = input.version ? await ledger.getRateCard(input.version) : await ledger.activeRateCard();
        const record = (await ledger.listRateCards()).find((r) => r.version === card.version);
        return { card, record };
      });
      cli.print({
        json: { version: card.version, active: record?.active ?? false, activatedAt: record?.activatedAt ?? null, document: card.document },
        human: () =>
          `${heading(`Rate card ${card.version}${record?.active ? ' (active)' : ''}`)}\n` +
          (card.description ? `${card.description}\n` : '') +
          `\n${rateCardTables(card)}`,
      });
    });

  ratecard
    .command('list')
    .description('every imported rate card; one is active')
    .action(async () => {
      const records = await cli.withLedger(async (ledger) => {
        await ledger.activeRateCard(); // first use installs the packaged default, as a charge would
        return ledger.listRateCards();
      });
      cli.print({
        json: { rateCards: records.map(recordJson) },
        human: () =>
          table(
            [
              { header: 'version', value: (r: RateCardRecord) => r.version },
              { header: 'active', value: (r) => (r.active ? 'yes' : '') },
              { header: 'imported (UTC)', value: (r) => shortTime(r.importedAt) },
              { header: 'activated (UTC)', value: (r) => (r.activatedAt ? shortTime(r.activatedAt) : '') },
            ],
            records,
          ),
      });
    });

  ratecard
    .command('import <file>')
    .description('import a rate card JSON file (versions are immutable) and activate it unless --no-activate')
    .option('--no-activate', 'import only; activate later with `ratecard activate <version>`')
    .action(async (file: string, opts: { activate: boolean }) => {
      const input = parseInput(z.object({ file: text('file', 4096) }), { file });
      const card = readRateCardFile(input.file);
      const record = await cli.withLedger((ledger) => ledger.importRateCard(card, { activate: opts.activate, actor: CLI_ACTOR }));
      cli.print({
        json: recordJson(record),
        human: () =>
          `Imported rate card ${record.version}${record.active ? ' and made it active' : ' (not active)'}\n` +
          keyValues([
            ['version', record.version],
            ['active', record.active ? 'yes' : 'no'],
            ['imported (UTC)', shortTime(record.importedAt)],
          ], '  '),
      });
    });

  ratecard
    .command('activate <version>')
    .description('make an imported rate card the one new charges use')
    .action(async (version: string) => {
      const input = parseInput(z.object({ version: rateCardVersion }), { version });
      const record = await cli.withLedger((ledger) => ledger.activateRateCard(input.version, { actor: CLI_ACTOR }));
      cli.print({
        json: recordJson(record),
        human: () => `Rate card ${record.version} is now active (since ${record.activatedAt ? shortTime(record.activatedAt) : '?'} UTC)`,
      });
    });
}
