import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { BillingCallbackHandler } from '../src/metering/handler';
import type { BillingHandlerOptions } from '../src/metering/options';
import { billingRunConfig } from '../src/metering/run-config';
import { estimatePromptTokens } from '../src/metering/estimate';
import { parseUsd } from '../src/money';
import { priceTokens } from '../src/pricing/price';
import type { SqlLedger } from '../src/ledger/sql-ledger';
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
});
