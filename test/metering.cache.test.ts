import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { ChatAnthropic } from '@langchain/anthropic';
import { HumanMessage, SystemMessage, type AIMessageChunk, type BaseMessage } from '@langchain/core/messages';
import { CallbackHandler } from 'langfuse-langchain';
import { BillingCallbackHandler } from '../src/metering/handler';
import { billingRunConfig } from '../src/metering/run-config';
import { addTokenCounts, estimatePromptTokens, type StreamCounts, streamChunkUsageOf, streamTotal, usageMetadataOf, usageOf } from '../src/metering/estimate';
import { shutdownLangfuseReporters } from '../src/langfuse/reporter';
import { openFlowRun } from '../src/plugin/flow-run';
import { closeSharedLedgers } from '../src/plugin/ledgers';
import { parseUsd } from '../src/money';
import { priceTokens } from '../src/pricing/price';
import { parseRateCard } from '../src/pricing/ratecard';
import defaultDoc from '../ratecards/default.json';
import { handlerLedger, variantLedger } from './support/priced-ledgers';
import { installOfflineTiktoken, startOpenAIServer, type OpenAIServer } from './support/openai-server';
import { ANTHROPIC_KEY, startAnthropicServer, type AnthropicServer } from './support/anthropic-server';
import { startLangfuseServer, type LangfuseServer } from './support/langfuse-server';

/**
 * Cached prompt tokens are charged at the card's cache prices, read from what real
 * LangChain clients report for the loopback servers' cache usage (OpenAI
 * `prompt_tokens_details.cached_tokens`; Anthropic `cache_read_input_tokens` /
 * `cache_creation_input_tokens`), by the callback handler and by the metered model.
 *
 * The card's prices are whole nanos per token, so each expected amount is worked by hand: input 2,000
 * nanos, output 4,000, OpenAI cached input 500, Anthropic cache read 200 and cache write 2,500.
 */
const CARD = parseRateCard({
  ...defaultDoc,
  version: 'cache-test',
  models: {
    'gpt-4o-mini': { inputUsdPer1k: '0.002', outputUsdPer1k: '0.004', cachedInputUsdPer1k: '0.0005' },
    'claude-3-5-haiku': { inputUsdPer1k: '0.002', outputUsdPer1k: '0.004', cachedInputUsdPer1k: '0.0002', cacheWriteUsdPer1k: '0.0025' },
    '*': { inputUsdPer1k: '0.1', outputUsdPer1k: '0.1' },
  },
});
function nanos(p: { uncached: number; read?: number; write?: number; output: number }, rates: { read: number; write: number }): bigint {
  return BigInt(p.uncached * 2000 + (p.read ?? 0) * rates.read + (p.write ?? 0) * rates.write + p.output * 4000);
}
const OPENAI_RATES = { read: 500, write: 2000 }; // no write price: writes cost the input price
const ANTHROPIC_RATES = { read: 200, write: 2500 };

/** A long, stable prefix: what a provider caches. */
const MANUAL = Array.from({ length: 200 }, (_, i) => `rule${i}`).join(' ');
const prompt = (): BaseMessage[] => [new SystemMessage(MANUAL), new HumanMessage('name three colours please')];

const MODES = ['invoke', 'invoke, streaming on', '.stream()'] as const;
type Mode = (typeof MODES)[number];

async function call(model: ChatOpenAI | ChatAnthropic, how: Mode, options: Record<string, unknown> = {}): Promise<AIMessageChunk | BaseMessage> {
  if (how !== '.stream()') return model.invoke(prompt(), options);
  let message: AIMessageChunk | undefined;
  for await (const chunk of await model.stream(prompt(), options)) message = message ? message.concat(chunk) : chunk;
  return message!;
}

let openai: OpenAIServer;
let anthropic: AnthropicServer;
let langfuse: LangfuseServer;
let uninstallTiktoken: () => void;
let dir: string;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  [openai, anthropic, langfuse] = await Promise.all([startOpenAIServer(), startAnthropicServer(), startLangfuseServer()]);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-cache-'));
});
afterAll(async () => {
  await closeSharedLedgers();
  await shutdownLangfuseReporters(500);
  uninstallTiktoken?.();
  await Promise.all([openai?.close(), anthropic?.close(), langfuse?.close()]);
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  openai.reset();
  // OpenAI reports cache hits in multiples of 128 tokens.
  openai.setScript(() => ({ content: 'red green blue', usage: { cached_tokens: 128 } }));
  anthropic.reset();
  anthropic.setCache({ read: 150, write: 40 });
  langfuse.reset();
});

// Not `streaming: false` for the others: @langchain/openai takes it as disableStreaming, and .stream() then did not stream.
const chatOpenAI = (how: Mode) =>
  new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 64, ...(how === 'invoke, streaming on' ? { streaming: true } : {}), streamUsage: true });
const chatAnthropic = (how: Mode) =>
  new ChatAnthropic({ model: 'claude-3-5-haiku-20241022', apiKey: ANTHROPIC_KEY, anthropicApiUrl: anthropic.baseURL, maxRetries: 0, maxTokens: 64, streaming: how === 'invoke, streaming on' });

/** What the OpenAI call must cost: its uncached prompt, 128 cached tokens and its completion. */
function openaiExpected(): { amount: bigint; input: number; read: number; output: number } {
  const u = openai.calls[0]!.response!.usage!;
  expect(u.prompt_tokens_details.cached_tokens).toBe(128);
  return { amount: nanos({ uncached: u.prompt_tokens - 128, read: 128, output: u.completion_tokens }, OPENAI_RATES), input: u.prompt_tokens, read: 128, output: u.completion_tokens };
}

/**
 * What the Anthropic call must cost: the output Anthropic bills. For a stream, LangChain's message reports one
 * more (message_start's placeholder 1 added to message_delta's cumulative count); `reportedOutput` is checked so.
 */
function anthropicExpected(reportedOutput: number, streamed: boolean): { amount: bigint; input: number; read: number; write: number; output: number } {
  const u = anthropic.calls[0]!.usage;
  expect([u.cache_read_input_tokens, u.cache_creation_input_tokens]).toEqual([150, 40]);
  expect(reportedOutput).toBe(u.output_tokens + (streamed ? 1 : 0));
  return {
    amount: nanos({ uncached: u.input_tokens, read: 150, write: 40, output: u.output_tokens }, ANTHROPIC_RATES),
    input: u.input_tokens + 190,
    read: 150,
    write: 40,
    output: u.output_tokens,
  };
}

describe('reading cached parts of the input from LangChain usage', () => {
  const result = (usage_metadata: unknown) => ({ generations: [[{ text: 'x', message: { content: 'x', usage_metadata } }]] });
  it('takes input_token_details.cache_read / cache_creation as parts of input_tokens', () => {
    expect(usageOf(result({ input_tokens: 1000, output_tokens: 5, input_token_details: { cache_read: 800, cache_creation: 100, audio: 3 } }), 7)).toEqual({
      inputTokens: 1000,
      outputTokens: 5,
      cacheReadTokens: 800,
      cacheWriteTokens: 100,
      source: 'usage_metadata',
    });
  });
  it('clamps the parts to the input (reads first) and ignores garbage', () => {
    const parts = (details: unknown, input = 100) => {
      const u = usageMetadataOf({ input_tokens: input, output_tokens: 1, input_token_details: details })!;
      return [u.cacheReadTokens ?? 0, u.cacheWriteTokens ?? 0];
    };
    expect(parts({ cache_read: 150 })).toEqual([100, 0]);
    expect(parts({ cache_read: 70, cache_creation: 50 })).toEqual([70, 30]);
    expect(parts({ cache_read: -5, cache_creation: Number.NaN })).toEqual([0, 0]);
    expect(parts({ cache_read: '40', cache_creation: 1.5 })).toEqual([0, 0]);
    expect(parts({ cache_read: Infinity, cache_creation: null })).toEqual([0, 0]);
    expect(parts('garbage')).toEqual([0, 0]);
    expect(parts({ cache_read: 10 }, 0)).toEqual([0, 0]);
  });
  it('a stream: each chunk’s cache counts are cut to its own input, so a closing chunk repeating them with 0 input adds none', () => {
    const start = usageMetadataOf({ input_tokens: 210, output_tokens: 1, input_token_details: { cache_read: 150, cache_creation: 40 } });
    const end = usageMetadataOf({ input_tokens: 0, output_tokens: 9, input_token_details: { cache_read: 150, cache_creation: 40 } });
    const streamed = addTokenCounts(addTokenCounts(undefined, start), end);
    expect(streamed).toEqual({ inputTokens: 210, outputTokens: 10, cacheReadTokens: 150, cacheWriteTokens: 40 });
    // LangChain's concatenated message sums them (300 read + 80 written of 210): the stream's own count wins.
    const doubled = result({ input_tokens: 210, output_tokens: 10, input_token_details: { cache_read: 300, cache_creation: 80 } });
    expect(usageOf(doubled, 0, streamed)).toMatchObject({ inputTokens: 210, cacheReadTokens: 150, cacheWriteTokens: 40 });
    // Chunks that missed part of the input (OpenAI's usage chunk is never reported to callbacks) are not used.
    expect(usageOf(doubled, 0, { inputTokens: 0, outputTokens: 3 })).toEqual({ inputTokens: 210, outputTokens: 10, cacheReadTokens: 210, source: 'usage_metadata' });
    // Without cache counts the usage reads as it always did.
    expect(usageOf(result({ input_tokens: 3, output_tokens: 4, input_token_details: { cache_read: 0 } }), 0)).toEqual({ inputTokens: 3, outputTokens: 4, source: 'usage_metadata' });
  });
  it('a stream: Anthropic’s message_delta output is the call’s total, not added to message_start’s placeholder, whatever the order', () => {
    // As @langchain/anthropic builds them: message_start (input, placeholder output 1), message_delta (0 input, the delta's stop_reason).
    const start = { usage_metadata: { input_tokens: 210, output_tokens: 1, input_token_details: { cache_read: 150 } }, additional_kwargs: { id: 'msg_1', model: 'claude' } };
    const delta = { usage_metadata: { input_tokens: 0, output_tokens: 9, input_token_details: { cache_read: 150 } }, additional_kwargs: { stop_reason: 'end_turn', stop_sequence: null } };
    for (const order of [[start, delta], [delta, start]]) {
      const streamed = order.reduce<StreamCounts | undefined>((sum, m) => addTokenCounts(sum, streamChunkUsageOf(m)), undefined);
      expect(streamTotal(streamed)).toEqual({ inputTokens: 210, outputTokens: 9, cacheReadTokens: 150 });
      // LangChain's concatenated message (output 10, cache twice) is corrected by the stream.
      expect(usageOf(result({ input_tokens: 210, output_tokens: 10, input_token_details: { cache_read: 300 } }), 0, streamed)).toEqual({ inputTokens: 210, outputTokens: 9, cacheReadTokens: 150, source: 'usage_metadata' });
    }
    // Chunks of per-chunk counts (Google's client: differences of running totals) are still summed.
    const parts = [{ usage_metadata: { input_tokens: 5, output_tokens: 2 } }, { usage_metadata: { input_tokens: 0, output_tokens: 3 } }];
    expect(streamTotal(parts.reduce<StreamCounts | undefined>((sum, m) => addTokenCounts(sum, streamChunkUsageOf(m)), undefined))).toEqual({ inputTokens: 5, outputTokens: 5 });
  });
});

describe('BillingCallbackHandler: cached prompt tokens at the card’s cache prices', () => {
  const t = handlerLedger(CARD, 'conv-cache');
  const handler = t.handler;

  for (const how of MODES) {
    it(`ChatOpenAI (${how}): the cached prompt tokens at the cached input price`, async () => {
      const h = handler();
      const message = await call(chatOpenAI(how), how, { callbacks: [h] });
      expect(openai.calls).toHaveLength(1);
      expect(openai.calls[0]!.body.stream === true).toBe(how !== 'invoke');
      expect((message as AIMessageChunk).usage_metadata?.input_token_details?.cache_read).toBe(128);
      const e = openaiExpected();
      expect(h.charges).toHaveLength(1);
      const c = h.charges[0]!.charge;
      expect(c.amount).toBe(e.amount);
      expect(c.amount).toBe(priceTokens(CARD, 'gpt-4o-mini', e.input, e.output, { cacheReadTokens: 128 }).amount);
      expect(c.metadata).toMatchObject({ inputTokens: e.input, outputTokens: e.output, cacheReadTokens: 128 });
      expect(parseUsd('10') - (await t.ledger.balance(t.customerId)).balance).toBe(e.amount);
    });

    it(`ChatAnthropic (${how}): cache reads and cache writes each at their price`, async () => {
      const h = handler();
      const message = await call(chatAnthropic(how), how, { callbacks: [h] });
      expect(anthropic.calls).toHaveLength(1);
      const reported = (message as AIMessageChunk).usage_metadata!;
      const e = anthropicExpected(reported.output_tokens, how !== 'invoke');
      // 17 uncached input (200 + 3 + 4 words − 190 cached) × 2,000 + 150 × 200 + 40 × 2,500 + 5 output × 4,000.
      expect(e.amount).toBe(184_000n);
      expect(reported.input_tokens).toBe(e.input);
      expect(h.charges).toHaveLength(1);
      const c = h.charges[0]!.charge;
      expect(c.amount).toBe(e.amount);
      expect(c.amount).toBe(priceTokens(CARD, 'claude-3-5-haiku', e.input, e.output, { cacheReadTokens: 150, cacheWriteTokens: 40 }).amount);
      expect(c.metadata).toMatchObject({ inputTokens: e.input, outputTokens: e.output, cacheReadTokens: 150, cacheWriteTokens: 40 });
    });
  }

  it('the hold is still sized at the full input price (an upper bound): the call is paid before it runs', async () => {
    const h = handler();
    await call(chatAnthropic('invoke'), 'invoke', { callbacks: [h] });
    const c = h.charges[0]!.charge;
    const hold = await t.ledger.getHold(c.holdId!);
    expect(hold.amount).toBe(priceTokens(CARD, 'claude-3-5-haiku', estimatePromptTokens(prompt()), 64).amount);
    expect(hold.amount).toBeGreaterThan(c.amount);
  });

  it.each(['invoke', 'invoke, streaming on'] as const)('Langfuse (%s): the generation’s cost is split as its usage is (input, input_cache_read, input_cache_creation, output) and sums to the charge', async (how) => {
    const h = new BillingCallbackHandler({
      ledger: t.ledger,
      customerId: t.customerId,
      conversationId: 'conv-cache',
      runFee: false,
      computeTime: false,
      onError: () => undefined,
      langfuse: { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushAt: 1 },
    });
    const lf = new CallbackHandler({ publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushAt: 1 });
    const message = (await chatAnthropic(how).invoke(prompt(), billingRunConfig(h, { callbacks: [lf] }))) as AIMessageChunk;
    await Promise.all([lf.shutdownAsync(), h.flushLangfuse(5000)]);
    const e = anthropicExpected(message.usage_metadata!.output_tokens, how !== 'invoke');
    const c = h.charges[0]!.charge;
    const g = await langfuse.waitFor(() => {
      const o = langfuse.observations().get(h.runs[0]!.rootRunId);
      return o?.costDetails && o.usageDetails ? o : undefined;
    });
    // langfuse-langchain's usage keys: the uncached rest as `input`, the cache counts as input_<LangChain detail>.
    // The usage is langfuse-langchain's, from LangChain's message: for a stream, its cache counts twice and its
    // output one more than Anthropic bills (see withStreamedCounts). The cost, set from the charge, is the billed one.
    if (how === 'invoke') expect(g.usageDetails).toMatchObject({ input: e.input - 190, input_cache_read: 150, input_cache_creation: 40, output: e.output });
    else expect(g.usageDetails).toMatchObject({ input: 0, input_cache_read: 300, input_cache_creation: 80, output: e.output + 1 });
    const nano = (usd: number | undefined) => BigInt(Math.round((usd ?? 0) * 1e9));
    expect(nano(g.costDetails!.total)).toBe(c.amount);
    expect(nano(g.costDetails!.input)).toBe(BigInt((e.input - 190) * 2000));
    expect(nano(g.costDetails!.input_cache_read)).toBe(150n * 200n);
    expect(nano(g.costDetails!.input_cache_creation)).toBe(40n * 2500n);
    expect(nano(g.costDetails!.output)).toBe(BigInt(e.output * 4000));
  });
});

describe('metered chat model (the Flowise variants): cached prompt tokens at the card’s cache prices', () => {
  const db = () => path.join(dir, 'variants.sqlite');
  const { customer, metered, tokenCharges } = variantLedger(db, CARD);

  it('FlowRun: the charge’s Langfuse cost is split by kind of token, on the trace and on a call’s generation; bad cache counts are clamped, not lost', async () => {
    const lf = { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushIntervalMs: 50 };
    const nano = (usd: number | undefined) => BigInt(Math.round((usd ?? 0) * 1e9));
    // 1,000 input (800 read, 100 written, 100 uncached) and 20 output: 100×2,000 + 800×200 + 100×2,500 + 20×4,000 nanos.
    const expected = { total: 690_000n, input: 200_000n, input_cache_read: 160_000n, input_cache_creation: 250_000n, output: 80_000n };
    const usage = { inputTokens: 1000, outputTokens: 20, cacheReadTokens: 800, cacheWriteTokens: 100 };
    for (const traceId of [randomUUID(), undefined]) {
      const id = await customer();
      const run = await openFlowRun({ ledgerDatabase: db(), customerId: id, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false, traceId, langfuse: lf });
      const observationId = randomUUID();
      const b = await run.beforeModelCall({ callKey: `n:${observationId}`, model: 'claude-3-5-haiku', messages: [{ content: 'q' }], maxOutputTokens: 64, observationId });
      expect(b.ok).toBe(true);
      if (b.ok) await run.afterModelCall(b.ticket, { usage });
      await run.close();
      const [c] = await tokenCharges(id);
      expect(c!.amount).toBe(expected.total);
      const o = await langfuse.waitFor(() => {
        const x = langfuse.observations().get(traceId ? `billing-${c!.id}` : observationId);
        return x?.costDetails ? x : undefined;
      });
      expect(Object.fromEntries(Object.entries(o.costDetails!).map(([k, v]) => [k, nano(v)]))).toEqual(expected);
    }
    // A caller's counts past the input are cut to it (reads first): 1,000 read, 0 written, 0 uncached.
    const id = await customer();
    const run = await openFlowRun({ ledgerDatabase: db(), customerId: id, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false });
    const b = await run.beforeModelCall({ callKey: 'n:over', model: 'claude-3-5-haiku', messages: [{ content: 'q' }], maxOutputTokens: 64 });
    if (b.ok) await run.afterModelCall(b.ticket, { usage: { ...usage, cacheReadTokens: 5000, cacheWriteTokens: -3 } });
    await run.close();
    const [c] = await tokenCharges(id);
    expect(c!.amount).toBe(1000n * 200n + 20n * 4000n);
    expect(c!.metadata).toMatchObject({ inputTokens: 1000, cacheReadTokens: 1000 });
  });

  for (const how of MODES) {
    it(`ChatOpenAI (${how})`, async () => {
      const id = await customer();
      await call(metered(id, chatOpenAI(how)), how);
      expect(openai.calls).toHaveLength(1);
      expect(openai.calls[0]!.body.stream === true).toBe(how !== 'invoke');
      const e = openaiExpected();
      const [c, ...more] = await tokenCharges(id);
      expect(more).toEqual([]);
      expect(c!.amount).toBe(e.amount);
      expect(c!.metadata).toMatchObject({ inputTokens: e.input, outputTokens: e.output, cacheReadTokens: 128 });
    });

    it(`ChatAnthropic (${how})`, async () => {
      const id = await customer();
      const message = (await call(metered(id, chatAnthropic(how)), how)) as AIMessageChunk;
      expect(anthropic.calls).toHaveLength(1);
      const e = anthropicExpected(message.usage_metadata!.output_tokens, how !== 'invoke');
      expect(e.amount).toBe(184_000n);
      const [c, ...more] = await tokenCharges(id);
      expect(more).toEqual([]);
      expect(c!.amount).toBe(e.amount);
      expect(c!.metadata).toMatchObject({ inputTokens: e.input, outputTokens: e.output, cacheReadTokens: 150, cacheWriteTokens: 40 });
    });
  }
});
