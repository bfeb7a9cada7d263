import path from 'node:path';
import { isBillingError } from '../errors';
import type { Ledger } from '../ledger/types';
import type { Charge } from '../ledger/types';
import { formatSparks, formatUsd, parseUsd } from '../money';
import type { RateCard } from '../pricing/ratecard';
import { CLI_ACTOR } from './context';
import { keyValues, table, usd } from './output';
import { type CliQuote, parseQuoteRequest, quote } from './quote';
import { entryJson, statementTable } from './commands/statement';
import type { PriceItem } from './validate';
import { meteredRuns } from './demo-metering';
import { sessionQuota } from './demo-quota';

/**
 * The guided tour `flowise-billing demo` runs on a fresh ledger. It is a list
 * of steps; each does real ledger work and returns a JSON summary plus text.
 * Later features add a step to DEMO_STEPS (before `spendUntilEmpty`, which
 * drains the balance on purpose); the final statement is printed after all.
 */

export interface DemoContext {
  readonly ledger: Ledger;
  readonly card: RateCard;
  readonly customerId: string;
  /** A stable idempotency key for one demo operation. */
  key(name: string): string;
}

export interface DemoStop {
  readonly code: string;
  readonly message: string;
  readonly details: Record<string, unknown>;
}

export interface DemoSection {
  /** Machine-readable summary; amounts as USD strings. */
  readonly data: Record<string, unknown>;
  /** What a person reads under the step's heading. */
  readonly text: string;
  /** Set when the step ended on an expected refusal (e.g. INSUFFICIENT_FUNDS). */
  readonly stop?: DemoStop;
}

export interface DemoStep {
  readonly id: string;
  readonly title: string;
  run(ctx: DemoContext): Promise<DemoSection>;
}

// ---- helpers -----------------------------------------------------------------

/** Prices an item with the demo's card and charges it, exactly as `flowise-billing charge` does. */
async function chargeItem(ctx: DemoContext, item: PriceItem, quantity: string, keyName: string): Promise<{ q: CliQuote; charge: Charge }> {
  const q = quote(ctx.card, parseQuoteRequest(item, quantity));
  const charge = await ctx.ledger.charge({
    customerId: ctx.customerId,
    amount: q.amount,
    idempotencyKey: ctx.key(keyName),
    chargeType: q.item,
    quantity: q.quantity,
    rateCardVersion: q.rateCardVersion,
    metadata: { source: 'demo', ...q.extra },
    actor: CLI_ACTOR,
  });
  return { q, charge };
}

const check = (ok: boolean) => (ok ? 'ok' : 'MISMATCH');

// ---- steps -------------------------------------------------------------------

const TOP_UP = '12.00';

const customerAndTopUp: DemoStep = {
  id: 'customer',
  title: 'A customer and a top-up',
  async run(ctx) {
    const c = await ctx.ledger.createCustomer({ id: ctx.customerId, name: 'Acme Robotics (demo)', actor: CLI_ACTOR });
    const t = await ctx.ledger.topUp({ customerId: c.id, amount: parseUsd(TOP_UP), idempotencyKey: ctx.key('topup'), memo: 'demo top-up', actor: CLI_ACTOR });
    return {
      data: { customerId: c.id, name: c.name, topupUsd: formatUsd(t.amount), balanceUsd: formatUsd(t.balanceAfter) },
      text: keyValues([
        ['customer', `${c.id} (${c.name})`],
        ['topped up', usd(t.amount)],
        ['balance', usd(t.balanceAfter)],
      ], '  '),
    };
  },
};

interface WorkedExample {
  readonly item: PriceItem;
  readonly quantity: string;
  readonly what: string;
  readonly expectedUsd: string;
}

/** DESIGN.md's worked examples. Its text says 50 MB → $0.195; its own formula 0.0035·MB + 0.01 gives $0.185. */
const WORKED_EXAMPLES: readonly WorkedExample[] = [
  { item: 'Inference', quantity: '4', what: '4 images', expectedUsd: '0.08' },
  { item: 'ObjectTransformer', quantity: '1', what: '1 transform', expectedUsd: '0.01' },
  { item: 'Training', quantity: '120', what: '120 training minutes', expectedUsd: '7.20' },
  { item: 'Zipper', quantity: '50', what: '50 MB zip', expectedUsd: '0.185' },
];

const workedExamples: DemoStep = {
  id: 'worked-examples',
  title: 'Pricing and charging the worked examples',
  async run(ctx) {
    const rows: Array<{ ex: WorkedExample; q: CliQuote; charge: Charge }> = [];
    for (const ex of WORKED_EXAMPLES) {
      const { q, charge } = await chargeItem(ctx, ex.item, ex.quantity, `example:${ex.item}`);
      rows.push({ ex, q, charge });
    }
    const text = table(
      [
        { header: 'example', value: (r) => r.ex.what },
        { header: 'ChargeType', value: (r) => r.ex.item },
        { header: 'quantity', align: 'right', value: (r) => `${r.q.quantity} ${r.q.unit}` },
        { header: 'price', align: 'right', value: (r) => usd(r.q.amount) },
        { header: 'sparks', align: 'right', value: (r) => formatSparks(r.q.amount) },
        { header: 'expected', align: 'right', value: (r) => `$${r.ex.expectedUsd}` },
        { header: 'check', value: (r) => check(parseUsd(r.ex.expectedUsd) === r.q.amount) },
        { header: 'balance after', align: 'right', value: (r) => usd(r.charge.balanceAfter) },
      ],
      rows,
      { indent: '  ' },
    );
    return {
      data: {
        examples: rows.map(({ ex, q, charge }) => ({
          chargeType: ex.item,
          quantity: q.quantity,
          unit: q.unit,
          usd: formatUsd(q.amount),
          sparks: formatSparks(q.amount),
          expectedUsd: ex.expectedUsd,
          matches: parseUsd(ex.expectedUsd) === q.amount,
          chargeId: charge.id,
          balanceAfterUsd: formatUsd(charge.balanceAfter),
        })),
        notes: ['DESIGN.md says a 50 MB zip costs $0.195, but its formula 0.0035·MB + 0.01 gives $0.185; the rate card follows the formula.'],
      },
      text: `${text}\n  note: DESIGN.md says a 50 MB zip costs $0.195, but its own formula 0.0035·MB + 0.01 gives $0.185; the rate card follows the formula.`,
    };
  },
};

const paidPublicRun: DemoStep = {
  id: 'paid-public-run',
  title: 'A $12.00 paid public flow run: platform fee and creator payout',
  async run(ctx) {
    const { q, charge } = await chargeItem(ctx, 'PaidPublicFlowRun', '12', 'paid-public-run');
    const fee = String(q.extra.feeUsd);
    const net = String(q.extra.creatorNetUsd);
    return {
      data: {
        runPriceUsd: q.extra.runPriceUsd,
        feeUsd: fee,
        creatorNetUsd: net,
        expected: { feeUsd: '3.15', creatorNetUsd: '8.85' },
        matches: fee === '3.15' && net === '8.85',
        chargeId: charge.id,
        balanceAfterUsd: formatUsd(charge.balanceAfter),
      },
      text: keyValues([
        ['run price', `$${String(q.extra.runPriceUsd)}`],
        ['fee (0.23·price + 0.39)', `$${fee}  (expected $3.15: ${check(fee === '3.15')})`],
        ['creator nets', `$${net}  (expected $8.85: ${check(net === '8.85')})`],
        ['fee charged', `${usd(charge.amount)} as PaidPublicFlowRun, balance after ${usd(charge.balanceAfter)}`],
      ], '  '),
    };
  },
};

const BATCH_TOKENS = '10000';

const spendUntilEmpty: DemoStep = {
  id: 'spend-until-empty',
  title: `Generating objects in ${BATCH_TOKENS}-token batches until the money runs out`,
  async run(ctx) {
    const batches: Array<{ n: number; amount: bigint; balanceAfter: bigint; chargeId: string }> = [];
    let stop: DemoStop | undefined;
    for (let n = 1; n <= 1000 && !stop; n++) {
      try {
        const { charge } = await chargeItem(ctx, 'ObjectGenerator', BATCH_TOKENS, `batch:${n}`);
        batches.push({ n, amount: charge.amount, balanceAfter: charge.balanceAfter, chargeId: charge.id });
      } catch (e) {
        if (!isBillingError(e) || e.code !== 'INSUFFICIENT_FUNDS') throw e;
        stop = { code: e.code, message: e.message, details: e.details };
      }
    }
    const text = table(
      [
        { header: 'batch', align: 'right', value: (b: (typeof batches)[number]) => b.n },
        { header: 'tokens', align: 'right', value: () => BATCH_TOKENS },
        { header: 'price', align: 'right', value: (b) => usd(b.amount) },
        { header: 'balance after', align: 'right', value: (b) => usd(b.balanceAfter) },
      ],
      batches,
      { indent: '  ' },
    );
    const stopText = stop
      ? `\n\n  STOP  error[${stop.code}]: ${stop.message}\n` +
        keyValues(Object.entries(stop.details).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)] as const), '        ') +
        '\n  Nothing was charged for the refused batch; the balance never goes below zero.'
      : '\n\n  (the balance did not run out)';
    return {
      data: {
        batchTokens: BATCH_TOKENS,
        batches: batches.map((b) => ({ batch: b.n, usd: formatUsd(b.amount), balanceAfterUsd: formatUsd(b.balanceAfter), chargeId: b.chargeId })),
        stop: stop ?? null,
      },
      text: text + stopText,
      stop,
    };
  },
};

/** The tour, in order. Add sections before `spendUntilEmpty`. */
const DEMO_STEPS: DemoStep[] = [customerAndTopUp, workedExamples, paidPublicRun, sessionQuota, meteredRuns, spendUntilEmpty];

// ---- runner -------------------------------------------------------------------

export interface DemoReport {
  readonly json: Record<string, unknown>;
  readonly text: string;
}

/** A customer id not yet used in this ledger (a fresh ledger gets "demo-acme"). */
async function freshCustomerId(ledger: Ledger): Promise<string> {
  for (let i = 1; ; i++) {
    const id = i === 1 ? 'demo-acme' : `demo-acme-${i}`;
    if (!(await ledger.findCustomer(id))) return id;
  }
}

export async function runDemo(ledger: Ledger, steps: readonly DemoStep[] = DEMO_STEPS): Promise<DemoReport> {
  const customerId = await freshCustomerId(ledger);
  const card = await ledger.activeRateCard();
  const ctx: DemoContext = { ledger, card, customerId, key: (name) => `demo:${customerId}:${name}` };

  const sections: string[] = [];
  const stepsJson: Record<string, unknown>[] = [];
  let stoppedBy: DemoStop | null = null;
  for (const [i, step] of steps.entries()) {
    const s = await step.run(ctx);
    stepsJson.push({ id: step.id, title: step.title, ...s.data });
    stoppedBy ??= s.stop ?? null;
    sections.push(`${i + 1}. ${step.title}\n\n${s.text}`);
  }

  const entries = await ledger.statement(customerId);
  const b = await ledger.balance(customerId);
  sections.push(
    `${steps.length + 1}. Final statement for ${customerId}\n\n${statementTable(entries, '  ')}\n\n` +
      keyValues([
        ['balance', usd(b.balance)],
        ['held', usd(b.held)],
        ['available', usd(b.available)],
      ], '  '),
  );

  const title = 'flowise-billing demo';
  const header =
    `${title}\n${'='.repeat(title.length)}\n` +
    keyValues([
      ['ledger', `${ledger.backend} at ${ledger.location}`],
      ['rate card', card.version],
      ['customer', customerId],
    ]);
  const cli = cliCommand();
  const footer = `Explore it yourself:\n  ${cli} --db ${quoteArg(ledger.location)} statement ${customerId}\n  ${cli} --db ${quoteArg(ledger.location)} price Zipper 50`;

  return {
    json: {
      demo: 'completed',
      backend: ledger.backend,
      location: ledger.location,
      customerId,
      rateCardVersion: card.version,
      steps: stepsJson,
      stoppedBy,
      final: {
        balanceUsd: formatUsd(b.balance),
        heldUsd: formatUsd(b.held),
        availableUsd: formatUsd(b.available),
        entries: entries.map(entryJson),
      },
    },
    text: [header, ...sections, footer].join('\n\n'),
  };
}

/**
 * The CLI as the reader can type it again: its own name when this process
 * came in through the installed `flowise-billing` bin, else `npx
 * flowise-billing` (a clone's `npm run demo` runs dist/ directly, and no
 * `flowise-billing` is on the PATH there; npx finds the project's own bin).
 */
export function cliCommand(script: string = process.argv[1] ?? ''): string {
  return path.basename(script) === 'flowise-billing' ? 'flowise-billing' : 'npx flowise-billing';
}

function quoteArg(s: string): string {
  return /^[A-Za-z0-9_./:@-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
