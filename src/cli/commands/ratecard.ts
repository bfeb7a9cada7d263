import fs from 'node:fs';
import type { Command } from 'commander';
import { z } from 'zod';
import { isBillingError, ValidationError } from '../../errors';
import type { RateCardRecord } from '../../ledger/types';
import { formatScaled, formatSparks, NANOS_PER_SPARK, type Nanos, USD_DECIMALS } from '../../money';
import { CATALOGUE_PROVIDERS, loadCatalogue, rateCardFromCatalogue } from '../../pricing/catalogue';
import { CHARGE_TYPES, defaultRateCard, type Rate, type RateCard, readRateCardFile, RESOURCES } from '../../pricing/ratecard';
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
function rateCardTables(card: RateCard): string {
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
      const { card, record } = await cli.readLedger(async (ledger) => {
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
      const records = await cli.readLedger(async (ledger) => {
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
    .command('import-models')
    .description('a new rate card version whose model prices come from the @pydantic/genai-prices catalogue (the rest from the active card); says what it could not represent')
    .option('--version <version>', 'version of the new card (default: models-<today>)')
    .option('--providers <list>', `catalogue providers, in precedence order (default ${CATALOGUE_PROVIDERS.join(',')})`)
    .option('--no-activate', 'import only; activate later with `ratecard activate <version>`')
    .option('--out <file>', 'write the card JSON to this file instead of importing it (built on the active card, or the shipped one when there is no ledger yet)')
    .action(async (opts: { version?: string; providers?: string; activate: boolean; out?: string }) => {
      const input = parseInput(
        z.object({ version: rateCardVersion.optional(), providers: text('providers', 200).optional(), out: text('out', 4096).optional() }),
        { version: opts.version, providers: opts.providers, out: opts.out },
      );
      const version = input.version ?? `models-${new Date().toISOString().slice(0, 10)}`;
      const providers = input.providers?.split(',').map((p) => p.trim()).filter(Boolean);
      const { catalogue, version: catalogueVersion } = loadCatalogue();
      const build = (base: RateCard) => rateCardFromCatalogue(catalogue, base, { version, providers, catalogueVersion });
      let r: ReturnType<typeof build>;
      let record: RateCardRecord | null = null;
      if (input.out) {
        // The file is the card an import would make, so it is built on the active card; with no ledger
        // yet, on the shipped default (nothing is created). Built on the default, importing it would
        // quietly put the operator's own ChargeType and resource prices back to the shipped ones.
        const base = await cli.readLedger((ledger) => ledger.activeRateCard()).catch((e: unknown) => {
          if (isBillingError(e) && e.code === 'LEDGER_NOT_FOUND') return defaultRateCard();
          throw e;
        });
        r = build(base);
        try {
          fs.writeFileSync(input.out, `${JSON.stringify(r.card.document, null, 2)}\n`);
        } catch (e) {
          // A missing folder or a directory given as the file is the operator's to fix, not a bug (INTERNAL_ERROR).
          throw new ValidationError(`Cannot write rate card file ${input.out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { file: input.out });
        }
      } else {
        ({ r, record } = await cli.withLedger(async (ledger) => {
          const built = build(await ledger.activeRateCard());
          return { r: built, record: await ledger.importRateCard(built.card, { activate: opts.activate, actor: CLI_ACTOR }) };
        }));
      }
      const json = {
        version,
        catalogue: `@pydantic/genai-prices ${r.catalogueVersion}`,
        ...(record ? { record: recordJson(record) } : { written: input.out }),
        models: r.card.models.size,
        imported: r.imported,
        keptFromBase: r.keptFromBase,
        skipped: r.skipped,
        approximations: r.approximations,
      };
      cli.print({
        json,
        human: () =>
          [
            record ? `Imported rate card ${version}${record.active ? ' and made it active' : ' (not active)'}` : `Wrote rate card ${version} to ${input.out}`,
            keyValues([
              ['catalogue', json.catalogue],
              ['model prices', `${r.card.models.size} (${Object.entries(r.imported).map(([p, n]) => `${p} ${n}`).join(', ')}; kept from the base card: ${r.keptFromBase.join(', ') || 'none'})`],
              ['not imported', `${r.skipped.length} catalogue models (no token price, a price finer than 9 decimals per 1K, or no name to match)`],
              ['approximated', `${r.approximations.length} models have prices the card cannot hold (tiers, one-hour cache writes, audio/image prices, dated changes)`],
            ], '  '),
            '',
            table(
              [
                { header: 'provider', value: (m: (typeof r.approximations)[number]) => m.provider },
                { header: 'model', value: (m) => m.model },
                { header: 'not represented', value: (m) => m.reason },
              ],
              [...r.skipped, ...r.approximations],
            ),
          ].join('\n'),
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
