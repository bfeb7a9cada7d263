import fs from 'node:fs';
import path from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { registerAudit } from './commands/audit';
import { registerBalance } from './commands/balance';
import { registerCharge } from './commands/charge';
import { registerCustomers } from './commands/customers';
import { registerDemo } from './commands/demo';
import { registerHolds } from './commands/holds';
import { registerMigrate } from './commands/migrate';
import { registerPrice } from './commands/price';
import { registerRatecard } from './commands/ratecard';
import { registerRefund } from './commands/refund';
import { registerStatement } from './commands/statement';
import { registerTopup } from './commands/topup';
import { registerBudget } from './commands/budget';
import { registerInvoice } from './commands/invoice';
import { registerPlans } from './commands/plans';
import { registerSessions } from './commands/sessions';
import { registerSubscriptions } from './commands/subscriptions';
import { registerUsage } from './commands/usage';
import { registerStripe } from './commands/stripe';
import { registerCheckout } from './commands/checkout';
import { registerPlugin } from './commands/plugin';
import { registerToken } from './commands/token';
import { registerServe } from './commands/serve';
import { registerApikeys } from './commands/apikeys';
import { registerEndpoints } from './commands/endpoints';
import { CliContext } from './context';
import { addExamples } from './examples';
import { configureRendering, type Format, FORMATS, type Io, jsonLine, printFailure, processIo, quietOnClosedPipe, terminalWidth, toFailure, usageFailure } from './output';

/** Every command, in help order. A new command is one module and one line here. */
const COMMANDS = [
  registerDemo,
  registerMigrate,
  registerCustomers,
  registerTopup,
  registerPrice,
  registerCharge,
  registerRefund,
  registerBalance,
  registerStatement,
  registerRatecard,
  registerHolds,
  registerAudit,
  registerPlans,
  registerSubscriptions,
  registerSessions,
  registerUsage,
  registerBudget,
  registerInvoice,
  registerStripe,
  registerCheckout,
  registerToken,
  registerPlugin,
  registerServe,
  registerApikeys,
  registerEndpoints,
];

/**
 * The output format, known before parsing so that errors found while parsing
 * come out in it too: --json, or --format json|csv|tsv|table, before any `--`.
 */
function wantsFormat(args: readonly string[]): Format {
  const end = args.indexOf('--');
  const before = end === -1 ? args : args.slice(0, end);
  let format: Format = 'table';
  before.forEach((a, i) => {
    const v = a.startsWith('--format=') ? a.slice('--format='.length) : a === '--format' ? before[i + 1] : undefined;
    if (v !== undefined && (FORMATS as readonly string[]).includes(v)) format = v as Format;
  });
  return before.includes('--json') ? 'json' : format;
}

function packageVersion(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'flowise-billing') return pkg.version ?? '0.0.0';
    } catch {
      // keep looking upwards
    }
    if (path.dirname(dir) === dir) return '0.0.0';
  }
}

export function buildProgram(io: Io, json: boolean): { program: Command; cli: CliContext } {
  const program = new Command('flowise-billing');
  const cli = new CliContext(io, json, () => program.opts<{ db?: string }>());
  program
    .description('Usage billing for Flowise: customers, top-ups, prices, charges, refunds, statements and rate cards.')
    .option('--db <location>', 'SQLite file path or postgres:// URL (default: $FLOWISE_BILLING_DB, else billing.sqlite in $DATABASE_PATH or ~/.flowise)')
    .option('--json', 'print exactly one JSON object on stdout (errors too: {"error":{code,message,details}}); same as --format json')
    .addOption(new Option('--format <format>', 'table (aligned, fits the terminal; default), csv or tsv (every value in full, for spreadsheets and cut), or json').choices(FORMATS))
    .version(packageVersion(), '-V', 'print the version (also --version, given first)')
    // Settings below are inherited by every subcommand created after them.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.out(s),
      // Help shown because of an error (no command given) is replaced by our one error line too.
      writeErr: () => undefined,
      // Commander's own error lines are replaced by ours (one line, or one JSON object).
      outputError: () => undefined,
    })
    .showSuggestionAfterError(true)
    .allowExcessArguments(false)
    .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
    .addHelpText(
      'after',
      `
Amounts are USD decimal strings (e.g. 10, 0.50, $0.000025); exponents, NaN and negative values are refused.
Exit codes: 0 ok, 1 business or validation error, 2 usage error.

Examples:
  flowise-billing demo
  flowise-billing customers create acme --name "Acme Inc"
  flowise-billing topup acme 10.00 --key invoice-1042
  flowise-billing price Training 120
  flowise-billing price tokens 1200 --model gpt-4o-mini --output-tokens 300
  flowise-billing charge acme Inference 4 --json
  flowise-billing statement acme --limit 20`,
    );
  for (const register of COMMANDS) register(program, cli);
  addExamples(program);
  return { program, cli };
}

/** Runs the CLI; resolves to the process exit code. Never throws, never prints a stack (unless FLOWISE_BILLING_DEBUG). */
export async function run(argv: readonly string[], io: Io = processIo): Promise<number> {
  const args = argv.slice(2);
  const format = wantsFormat(args);
  const json = format === 'json';
  if (io === processIo) quietOnClosedPipe();
  configureRendering(format, terminalWidth(io.env));
  // `--version` is also a subcommand option (price/ratecard --version <rate card>), so commander cannot own it
  // globally; given first, it is the program's version.
  if (args[0] === '--version') {
    io.out(json ? jsonLine({ version: packageVersion() }) : `${packageVersion()}\n`);
    return 0;
  }
  try {
    const { program, cli } = buildProgram(io, json);
    await program.parseAsync([...args], { from: 'user' });
    return cli.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.exitCode === 0) return 0; // --help, -V
      const message =
        e.code === 'commander.help' || e.code === 'commander.executeSubCommandAsync'
          ? 'a command is required; see flowise-billing --help'
          : `${e.message.replace(/^error:\s*/, '').replace(/\s*\n\s*/g, ' ').replace(/\.$/, '')}; see flowise-billing --help`;
      printFailure(io, usageFailure(message, { commanderCode: e.code }), json);
      return 2;
    }
    const failure = toFailure(e);
    printFailure(io, failure, json, e);
    return failure.exitCode;
  }
}
