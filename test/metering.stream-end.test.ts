import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda } from '@langchain/core/runnables';
import { tool, type StructuredToolInterface } from '@langchain/core/tools';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { BillingCallbackHandler } from '../src/metering/handler';
import type { BillingHandlerOptions } from '../src/metering/options';
import { billingRunConfig } from '../src/metering/run-config';
import { estimatePromptTokens } from '../src/metering/estimate';
import { parseUsd } from '../src/money';
import { priceChargeType, priceTokens } from '../src/pricing/price';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import type { Charge } from '../src/ledger/types';
import { BACKENDS } from './support/backends';
import { installOfflineTiktoken, startOpenAIServer, type OpenAIServer } from './support/openai-server';

/**
 * How a streamed call ends when LangChain reports nothing (an abort, a consumer that stops reading) and
 * when it outlives its hold: every provider call that happened is charged, and nothing is charged twice.
 */

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
beforeEach(() => {
  openai.reset();
  openai.setScript(null);
  openai.setOptions({ delayMs: 0, chunkDelayMs: 0, interrupt: undefined, wordsPerChunk: 1 });
});

// One-letter words: the text estimate (chars / 4) never exceeds the chunk count, so the count decides the charge.
const PROMPT = 'a b c d e f g h i j k l m n o p';

function chatOpenAI(): ChatOpenAI {
  return new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 64, streaming: true });
}

/** Every charge the ledger holds for the customer. */
async function ledgerCharges(ledger: SqlLedger, customerId: string): Promise<Charge[]> {
  const entries = await ledger.statement(customerId);
  const ids = entries.filter((e) => e.chargeId && (e.type === 'settle' || e.type === 'charge')).map((e) => e.chargeId!);
  return Promise.all(ids.map((id) => ledger.getCharge(id)));
}

const textOf = (piece: unknown) => (typeof piece === 'string' ? piece : String((piece as { content?: unknown }).content ?? ''));

describe.each(BACKENDS)('streams LangChain does not end, on $name', (backend) => {
  const opened: SqlLedger[] = [];
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });

  async function fresh(opts: { holdTtlMs?: number; usd?: string } = {}) {
    const ledger = await backend.open(await backend.freshTarget(), opts.holdTtlMs ? { holdTtlMs: opts.holdTtlMs } : undefined);
    opened.push(ledger);
    const customerId = `s-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id: customerId });
    await ledger.topUp({ customerId, amount: parseUsd(opts.usd ?? '5'), idempotencyKey: `top-${customerId}` });
    const handler = (extra: Partial<BillingHandlerOptions> = {}) =>
      new BillingCallbackHandler({ ledger, customerId, conversationId: 'conv', computeTime: false, onError: () => undefined, ...extra });
    return { ledger, customerId, handler };
  }

  it('a consumer that aborts with a chunk in its hand is charged that chunk too (its report never comes)', async () => {
    const { ledger, customerId, handler } = await fresh();
    const card = await ledger.activeRateCard();
    const h = handler({ runFee: false });
    const ac = new AbortController();
    let received = 0;
    const err = await (async () => {
      for await (const piece of await chatOpenAI().stream(PROMPT, { ...billingRunConfig(h), signal: ac.signal })) {
        if (textOf(piece) && ++received === 3) ac.abort();
      }
    })().catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/abort/i);
    await vi.waitFor(() => expect(h.runs).toHaveLength(1));
    const llm = h.charges.filter((c) => c.kind === 'llm');
    expect(llm).toHaveLength(1);
    // "echo: ", "a ", "b " reached the consumer: 3 output tokens by the server's count (one word per chunk).
    const inT = estimatePromptTokens([new HumanMessage(PROMPT)]);
    expect(llm[0]!.charge.metadata).toMatchObject({ outputTokens: received, inputTokens: inT, note: 'stream cut short' });
    expect(llm[0]!.charge.amount).toBe(priceTokens(card, 'gpt-4o-mini', inT, received).amount);
    expect(openai.callCount()).toBe(1);
    expect((await ledger.balance(customerId)).held).toBe(0n);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('an abort while the stream waits on the network is ended by LangChain itself: no chunk added', async () => {
    const { ledger, customerId, handler } = await fresh();
    openai.setOptions({ chunkDelayMs: 150 });
    const h = handler({ runFee: false });
    const ac = new AbortController();
    let received = 0;
    const err = await (async () => {
      for await (const piece of await chatOpenAI().stream(PROMPT, { ...billingRunConfig(h), signal: ac.signal })) {
        // Aborted later, from a timer: the consumer has read its chunk and LangChain is waiting for the next.
        if (textOf(piece) && ++received === 3) setTimeout(() => ac.abort(), 40);
      }
    })().catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/abort/i);
    await vi.waitFor(() => expect(h.runs).toHaveLength(1));
    const llm = h.charges.filter((c) => c.kind === 'llm');
    expect(llm.map((c) => c.charge.metadata.outputTokens)).toEqual([received]);
    expect((await ledger.balance(customerId)).held).toBe(0n);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  // The reservation lives 1 s here (15 min by default); the sweep looks every 125 ms.
  const TTL = 1000;

  it('a stream dropped with break (LangChain reports nothing) is charged what it streamed before its reservation lapses; its run ends; a late end charges nothing more', async () => {
    const { ledger, customerId, handler } = await fresh({ holdTtlMs: TTL });
    const card = await ledger.activeRateCard();
    openai.setOptions({ chunkDelayMs: 5 });
    const runnables = {
      model: () => ({ run: chatOpenAI(), input: PROMPT as unknown }),
      chain: () => ({ run: ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(chatOpenAI()).pipe(new StringOutputParser()), input: { q: PROMPT } as unknown }),
    };
    for (const [root, make] of Object.entries(runnables)) {
      openai.reset();
      const h = handler();
      const { run, input } = make();
      let received = 0;
      for await (const piece of await (run as { stream(i: unknown, c: object): Promise<AsyncIterable<unknown>> }).stream(input, billingRunConfig(h))) {
        if (textOf(piece) && ++received === 3) break;
      }
      expect(h.inFlight.roots, root).toBe(1);
      // Charged once a whole lifetime passed without a token: before the reservation could lapse.
      await vi.waitFor(() => expect(h.runs, root).toHaveLength(1), { timeout: 5 * TTL, interval: 50 });
      expect(h.failures.map((f) => (f.error as Error).message), root).toEqual([]);
      expect(h.inFlight, root).toEqual({ roots: 0, steps: 0 });
      const llm = h.charges.filter((c) => c.kind === 'llm');
      expect(llm, root).toHaveLength(1);
      const inT = estimatePromptTokens([new HumanMessage(PROMPT)]);
      // "echo: ", "a ", "b ": the consumer's third chunk was never reported (it broke out holding it).
      expect(llm[0]!.charge.metadata, root).toMatchObject({ outputTokens: received, inputTokens: inT, usageSource: 'estimate', note: 'stream dropped' });
      expect(llm[0]!.charge.amount, root).toBe(priceTokens(card, 'gpt-4o-mini', inT, received).amount);
      // The run was answered in part: it pays its fee, like an aborted one.
      expect(h.charges.map((c) => c.kind).sort(), root).toEqual(['fee', 'llm']);
      expect(openai.callCount(), root).toBe(1);
      expect((await ledger.balance(customerId)).held, root).toBe(0n);

      // A late end of that call (LangChain never sends one for a dropped stream; a provider might): nothing more, no throw.
      const before = (await ledgerCharges(ledger, customerId)).length;
      const usage = { input_tokens: 100, output_tokens: 100, total_tokens: 200 };
      await h.handleLLMEnd({ generations: [[{ text: 'late', message: { content: 'late', usage_metadata: usage } }]] }, llm[0]!.runId);
      await h.handleLLMError(new Error('late'), llm[0]!.runId);
      await h.handleLLMNewToken('late', undefined, llm[0]!.runId);
      expect((await ledgerCharges(ledger, customerId)).length, root).toBe(before);
      expect(h.charges.filter((c) => c.kind === 'llm'), root).toHaveLength(1);
    }
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a stream longer than its reservation’s lifetime is paid in full (its tokens keep the reservation alive)', async () => {
    const { ledger, customerId, handler } = await fresh({ holdTtlMs: TTL });
    const card = await ledger.activeRateCard();
    // 17 chunks 150 ms apart: about 2.6 lifetimes.
    openai.setOptions({ chunkDelayMs: 150 });
    const h = handler({ runFee: false });
    let text = '';
    for await (const piece of await chatOpenAI().stream(PROMPT, billingRunConfig(h))) text += textOf(piece);
    expect(text).toBe(`echo: ${PROMPT}`);
    expect(h.failures.map((f) => (f.error as Error).message)).toEqual([]);
    const server = openai.calls[0]!.response!.usage!;
    const llm = h.charges.filter((c) => c.kind === 'llm');
    expect(llm).toHaveLength(1);
    expect(llm[0]!.charge.amount).toBe(priceTokens(card, 'gpt-4o-mini', server.prompt_tokens, server.completion_tokens).amount);
    const all = await ledgerCharges(ledger, customerId);
    expect(all.map((c) => c.amount)).toEqual([llm[0]!.charge.amount]);
    expect((await ledger.balance(customerId)).held).toBe(0n);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('one model call (not streamed) longer than its reservation’s lifetime is paid: its prompt estimate after a lifetime, the rest at its end', async () => {
    const { ledger, customerId, handler } = await fresh({ holdTtlMs: TTL });
    const card = await ledger.activeRateCard();
    // The reservation taken for it would lapse at 1 s; the answer comes at 1.25 s.
    openai.setOptions({ delayMs: 1.25 * TTL });
    const h = handler({ runFee: false });
    const model = new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 64 });
    const out = await model.invoke('slow answer', billingRunConfig(h));
    expect(out.content).toBe('echo: slow answer');
    expect(h.failures.map((f) => (f.error as Error).message)).toEqual([]);
    const server = openai.calls[0]!.response!.usage!;
    const all = await ledgerCharges(ledger, customerId);
    // Nothing tells a call still waiting from a stream dropped before its first token: after a lifetime with
    // no answer it is charged its prompt estimate (while its reservation lives), and its end charges the rest.
    const estimate = priceTokens(card, 'gpt-4o-mini', estimatePromptTokens([new HumanMessage('slow answer')]), 0).amount;
    const full = priceTokens(card, 'gpt-4o-mini', server.prompt_tokens, server.completion_tokens).amount;
    expect(all.map((c) => c.amount)).toEqual([estimate, full - estimate]);
    expect((await ledger.balance(customerId)).held).toBe(0n);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a priced tool running longer than its run’s reservation lifetime is paid, and so is the run’s fee', async () => {
    const { ledger, customerId, handler } = await fresh({ holdTtlMs: TTL });
    const card = await ledger.activeRateCard();
    const slow = tool(async () => {
      await new Promise((r) => setTimeout(r, 1.25 * TTL));
      return 'done';
    }, { name: 'slow', description: 'slow tool', schema: { type: 'object', properties: {} } }) as unknown as StructuredToolInterface;
    const h = handler({ tools: { slow: { chargeType: 'Inference', quantity: 1 } } });
    const flow = RunnableLambda.from(async (_: string, config) => String(await slow.invoke({}, config)));
    expect(await flow.invoke('go', billingRunConfig(h))).toBe('done');
    expect(h.failures.map((f) => (f.error as Error).message)).toEqual([]);
    const all = await ledgerCharges(ledger, customerId);
    expect(all.map((c) => [c.chargeType, c.amount]).sort()).toEqual([['Inference', priceChargeType(card, 'Inference', 1).amount], ['PrivateFlowRun', priceChargeType(card, 'PrivateFlowRun', 1).amount]].sort());
    expect((await ledger.balance(customerId)).held).toBe(0n);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });
});
