import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda } from '@langchain/core/runnables';
import { BillingCallbackHandler } from '../src/metering/handler';
import type { BillingHandlerOptions } from '../src/metering/options';
import { billingRunConfig } from '../src/metering/run-config';
import { estimatePromptTokens } from '../src/metering/estimate';
import { watchCalls } from '../src/metering/call-sweep';
import { parseUsd } from '../src/money';
import { priceChargeType, priceComputeMs, priceTokens } from '../src/pricing/price';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import type { Charge } from '../src/ledger/types';
import { BACKENDS } from './support/backends';
import { defaultReply, installOfflineTiktoken, startOpenAIServer, type OpenAIServer } from './support/openai-server';

/**
 * A run's reservation lapses (a run idle for over half its hold lifetime), and a call has no answer for a
 * whole lifetime (a stream dropped before its first token report looks just like it): every provider call
 * is still paid, once, the run's fee is paid, and a run nobody ends holds no money.
 *
 * The hold lifetime is the handler's minimum, 60 s. Time is moved, not waited for: only `Date` is faked
 * (timers and I/O stay real; the ledger's clock reads the same `Date`), and a test-side target keeps the
 * process's call sweep looking every 25 ms instead of every 7.5 s (it looks at `Date.now()` as always).
 */

const TTL = 60_000;

let openai: OpenAIServer;
let uninstallTiktoken: () => void;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer();
});
afterAll(async () => {
  uninstallTiktoken?.();
  await openai?.close();
});

const driver = { on: false, sweep: () => (driver.on ? 25 : undefined) };
beforeEach(() => {
  openai.reset();
  openai.setScript(null);
  openai.setOptions({ delayMs: 0, chunkDelayMs: 0, interrupt: undefined, wordsPerChunk: 1 });
  vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true });
  driver.on = true;
  watchCalls(driver, 25);
});
afterEach(() => {
  driver.on = false;
  vi.useRealTimers();
});

/** Moves the clock (the ledger's and the handler's) forward, then lets the sweep look (every 25 ms) a few times. */
async function pass(ms: number): Promise<void> {
  vi.setSystemTime(Date.now() + ms);
  await new Promise((r) => setTimeout(r, 150));
}

function chatOpenAI(streaming = false): ChatOpenAI {
  return new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 64, streaming });
}

async function ledgerCharges(ledger: SqlLedger, customerId: string): Promise<Charge[]> {
  const entries = await ledger.statement(customerId);
  const ids = entries.filter((e) => e.chargeId && (e.type === 'settle' || e.type === 'charge')).map((e) => e.chargeId!);
  return Promise.all(ids.map((id) => ledger.getCharge(id)));
}

const errorsOf = (h: BillingCallbackHandler) => h.failures.map((f) => (f.error as Error).message);

describe.each(BACKENDS)('lapsed reservations and unanswered calls, on $name', (backend) => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });

  async function fresh(usd = '5') {
    const ledger = await backend.open(await backend.freshTarget(), { clock: () => Date.now() });
    opened.push(ledger);
    const customerId = `l-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id: customerId });
    await ledger.topUp({ customerId, amount: parseUsd(usd), idempotencyKey: `top-${customerId}` });
    const card = await ledger.activeRateCard();
    const handler = (extra: Partial<BillingHandlerOptions> = {}) =>
      new BillingCallbackHandler({ ledger, customerId, conversationId: 'conv', holdTtlMs: TTL, onError: () => undefined, ...extra });
    /** The ledger's charges by type, the amounts it took, and what is left. */
    const book = async () => {
      const all = await ledgerCharges(ledger, customerId);
      const bal = await ledger.balance(customerId);
      return { all, byType: (t: string) => all.filter((c) => c.chargeType === t), balance: bal.balance, held: bal.held };
    };
    return { ledger, customerId, card, handler, book };
  }

  /** What the server billed for call `i` (0-based), at the card's prices. */
  const served = (card: Awaited<ReturnType<SqlLedger['activeRateCard']>>, i: number) => {
    const u = openai.calls[i]!.response!.usage!;
    return priceTokens(card, 'gpt-4o-mini', u.prompt_tokens, u.completion_tokens, { cacheReadTokens: u.prompt_tokens_details.cached_tokens }).amount;
  };

  it('a run idle until its reservation lapsed takes a new one for its next call: both calls, the fee and the compute time are paid', async () => {
    const { ledger, card, handler, book } = await fresh();
    const h = handler();
    const model = chatOpenAI();
    const flow = RunnableLambda.from(async (q: string, config) => {
      const a = await model.invoke(q, config);
      // A slow retriever, an unpriced tool, a human pause: nothing in flight for more than a lifetime.
      await pass(TTL + 1_000);
      const b = await model.invoke(`again ${q}`, config);
      return `${String(a.content)} | ${String(b.content)}`;
    });
    expect(await flow.invoke('hello there', billingRunConfig(h))).toBe('echo: hello there | echo: again hello there');
    expect(errorsOf(h)).toEqual([]);
    expect(openai.callCount()).toBe(2);
    const b = await book();
    expect(b.byType('tokens:gpt-4o-mini').map((c) => c.amount)).toEqual([served(card, 0), served(card, 1)]);
    expect(b.byType('PrivateFlowRun').map((c) => c.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    const compute = b.byType('compute');
    expect(compute).toHaveLength(1);
    expect(compute[0]!.amount).toBe(priceComputeMs(card, BigInt(compute[0]!.quantity ?? -1)).amount);
    expect(b.all).toHaveLength(4);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(parseUsd('5') - b.all.reduce((s, c) => s + c.amount, 0n));
    expect(h.runs).toHaveLength(1);
    expect(h.runs[0]!.refused).toBe(false);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('two calls starting at once after the lapse share one new reservation; each is paid once, and the fee once', async () => {
    const { ledger, customerId, card, handler, book } = await fresh();
    const h = handler();
    const model = chatOpenAI();
    const flow = RunnableLambda.from(async (q: string, config) => {
      await model.invoke(q, config);
      await pass(TTL + 1_000);
      const [a, b] = await Promise.all([model.invoke(`left ${q}`, config), model.invoke(`right ${q}`, config)]);
      return `${String(a.content)} | ${String(b.content)}`;
    });
    expect(await flow.invoke('hi', billingRunConfig(h))).toBe('echo: left hi | echo: right hi');
    expect(errorsOf(h)).toEqual([]);
    expect(openai.callCount()).toBe(3);
    const reservations = (await ledger.statement(customerId)).filter((e) => e.type === 'hold' && e.chargeType === 'run-reservation' && e.idempotencyKey?.endsWith(':renew'));
    expect(reservations).toHaveLength(1);
    const b = await book();
    expect(b.byType('tokens:gpt-4o-mini').map((c) => c.amount).sort()).toEqual([served(card, 0), served(card, 1), served(card, 2)].sort());
    expect(b.byType('PrivateFlowRun')).toHaveLength(1);
    expect(b.byType('compute')).toHaveLength(1);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(parseUsd('5') - b.all.reduce((s, c) => s + c.amount, 0n));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a lapsed run whose balance no longer covers a new reservation is refused for funds before the provider, and pays no fee', async () => {
    const { ledger, customerId, card, handler, book } = await fresh('1');
    const h = handler();
    const model = chatOpenAI();
    const flow = RunnableLambda.from(async (q: string, config) => {
      await model.invoke(q, config);
      await pass(TTL + 1_000);
      // Meanwhile the customer spent the rest elsewhere, but for half a cent (less than the run's fee).
      const { available } = await ledger.balance(customerId);
      await ledger.charge({ customerId, amount: available - parseUsd('0.005'), idempotencyKey: `spend-${customerId}`, chargeType: 'Inference', quantity: '1', rateCardVersion: card.version });
      return String((await model.invoke(`again ${q}`, config)).content);
    });
    const err = await flow.invoke('hello there', billingRunConfig(h)).catch((e: unknown) => e);
    expect((err as { code?: string }).code).toBe('INSUFFICIENT_FUNDS');
    expect(openai.callCount()).toBe(1);
    await vi.waitFor(() => expect(h.runs).toHaveLength(1));
    expect(h.runs[0]!.refused).toBe(true);
    const b = await book();
    expect(b.byType('tokens:gpt-4o-mini').map((c) => c.amount)).toEqual([served(card, 0)]);
    expect(b.byType('PrivateFlowRun')).toEqual([]);
    expect(b.byType('compute')).toEqual([]);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(parseUsd('0.005'));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a run that ends idle after its reservation lapsed still pays its fee and compute time (charged from what is available)', async () => {
    const { ledger, card, handler, book } = await fresh();
    const h = handler();
    const model = chatOpenAI();
    const flow = RunnableLambda.from(async (q: string, config) => {
      const a = await model.invoke(q, config);
      await pass(TTL + 1_000);
      return String(a.content);
    });
    expect(await flow.invoke('hello there', billingRunConfig(h))).toBe('echo: hello there');
    expect(errorsOf(h)).toEqual([]);
    const b = await book();
    expect(b.byType('tokens:gpt-4o-mini').map((c) => c.amount)).toEqual([served(card, 0)]);
    expect(b.byType('PrivateFlowRun').map((c) => c.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    expect(b.byType('compute')).toHaveLength(1);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(parseUsd('5') - b.all.reduce((s, c) => s + c.amount, 0n));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a stream dropped on its first chunk (no token report ever comes) is charged its prompt estimate after a lifetime, with its run’s fee; nothing stays held', async () => {
    const { ledger, card, handler, book } = await fresh();
    openai.setOptions({ chunkDelayMs: 5 });
    const PROMPT = 'a b c d e f g h';
    const runs = {
      model: { h: handler(), run: chatOpenAI(true), input: PROMPT as unknown },
      chain: { h: handler(), run: ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(chatOpenAI(true)), input: { q: PROMPT } as unknown },
    };
    for (const r of Object.values(runs)) {
      const stream = await (r.run as { stream(i: unknown, c: object): Promise<AsyncIterable<{ content: unknown }>> }).stream(r.input, billingRunConfig(r.h));
      for await (const first of stream) {
        // OpenAI's first chunk (the role) carries no text; the consumer walks away holding it.
        expect(first.content).toBe('');
        break;
      }
    }
    expect(openai.callCount()).toBe(2);
    // Kept alive while younger than a lifetime (the sweep extends it past half of it), then charged.
    await pass(TTL / 2 + 5_000);
    expect((await book()).all).toEqual([]);
    await pass(TTL / 2);
    const inT = estimatePromptTokens([new HumanMessage(PROMPT)]);
    const estimate = priceTokens(card, 'gpt-4o-mini', inT, 0).amount;
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    for (const [name, r] of Object.entries(runs)) {
      await vi.waitFor(() => expect(r.h.charges.map((c) => c.kind).sort(), name).toEqual(name === 'model' ? ['compute', 'fee', 'llm'] : ['fee', 'llm']));
      expect(errorsOf(r.h), name).toEqual([]);
      const llm = r.h.charges.find((c) => c.kind === 'llm')!.charge;
      expect(llm.amount, name).toBe(estimate);
      expect(llm.metadata, name).toMatchObject({ inputTokens: inT, outputTokens: 0, usageSource: 'estimate', note: 'no answer within the hold lifetime' });
      expect(r.h.charges.find((c) => c.kind === 'fee')!.charge.amount, name).toBe(fee);
    }
    // The model run ended; the chain around the dropped call is never ended by LangChain: it holds its compute reserve until its reservation lapses.
    expect(runs.model.h.inFlight).toEqual({ roots: 0, steps: 0 });
    expect(runs.chain.h.inFlight.roots).toBe(1);
    await pass(TTL + 1_000);
    const b = await book();
    expect(b.byType('tokens:gpt-4o-mini').map((c) => c.amount)).toEqual([estimate, estimate]);
    expect(b.byType('PrivateFlowRun')).toHaveLength(2);
    expect(b.held).toBe(0n);
    await ledger.sweepExpiredHolds();
    expect(b.balance).toBe(parseUsd('5') - b.all.reduce((s, c) => s + c.amount, 0n));
    expect(openai.callCount()).toBe(2);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a call answered after more than a lifetime: charged its prompt estimate by the sweep, the rest (or a refund) at its late end, never twice; its run goes on and pays one fee', async () => {
    const { ledger, card, handler, book } = await fresh();
    // The first call answers after 600 ms of real time (100 s of the moved clock: more than 1.5 lifetimes, when
    // its reservation has lapsed); its usage is
    // the server's (above the prompt estimate) or, scripted, below it (the late end then refunds), or mostly
    // cached input (the late end prices it at the card's cache price, as a call answered in time is).
    for (const mode of ['above', 'below', 'cached'] as const) {
      const below = mode === 'below';
      const usage = { above: undefined, below: { prompt_tokens: 2, completion_tokens: 1, total_tokens: 3 }, cached: { prompt_tokens: 40, completion_tokens: 5, total_tokens: 45, cached_tokens: 32 } }[mode];
      openai.reset();
      openai.setScript((req, ctx) => ({ content: defaultReply(req), ...(ctx.callNumber === 1 ? { delayMs: 600, ...(usage ? { usage } : {}) } : {}) }));
      const h = handler();
      const model = chatOpenAI();
      const flow = RunnableLambda.from(async (q: string, config) => {
        const mover = (async () => {
          await new Promise((r) => setTimeout(r, 50));
          await pass(TTL / 2 + 5_000);
          await pass(TTL / 2);
          // Past its reservation's last expiry too (nothing in flight kept it alive after the charge).
          await pass(TTL / 2);
        })();
        const a = await model.invoke(q, config);
        await mover;
        const b = await model.invoke(`again ${q}`, config);
        return `${String(a.content)} | ${String(b.content)}`;
      });
      const before = (await book()).all.length;
      expect(await flow.invoke('slow answer', billingRunConfig(h))).toBe('echo: slow answer | echo: again slow answer');
      expect(errorsOf(h)).toEqual([]);
      expect(openai.callCount()).toBe(2);
      const first = h.charges.filter((c) => c.kind === 'llm' && c.runId === h.charges.find((x) => x.kind === 'llm')!.runId);
      const inT = estimatePromptTokens([new HumanMessage('slow answer')]);
      expect(first[0]!.charge.amount, mode).toBe(priceTokens(card, 'gpt-4o-mini', inT, 0).amount);
      const b = await book();
      const mine = b.all.slice(before);
      const refunded = mine.reduce((s, c) => s + c.refunded, 0n);
      const tokens = mine.filter((c) => c.chargeType === 'tokens:gpt-4o-mini').reduce((s, c) => s + c.amount, 0n) - refunded;
      // The first call costs exactly what the server billed (provisional + difference), the second too.
      expect(tokens, mode).toBe(served(card, 0) + served(card, 1));
      expect(refunded > 0n, mode).toBe(below);
      expect(mine.filter((c) => c.chargeType === 'PrivateFlowRun').map((c) => c.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
      expect(mine.filter((c) => c.chargeType === 'compute')).toHaveLength(1);
      expect(h.runs).toHaveLength(1);
      expect(b.held).toBe(0n);
      // A repeated late end (a retried callback) moves nothing.
      await h.handleLLMEnd({ generations: [[{ text: 'late', message: { content: 'late', usage_metadata: { input_tokens: 100, output_tokens: 100, total_tokens: 200 } } }]] }, first[0]!.runId);
      expect((await book()).all.length).toBe(b.all.length);
    }
    const b = await book();
    expect(b.balance).toBe(parseUsd('5') - b.all.reduce((s, c) => s + c.amount - c.refunded, 0n));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });
});
