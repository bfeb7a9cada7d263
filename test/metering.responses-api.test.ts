import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage, SystemMessage, type AIMessageChunk, type BaseMessage } from '@langchain/core/messages';
import { BillingCallbackHandler } from '../src/metering/handler';
import { estimatePromptTokens } from '../src/metering/estimate';
import { closeSharedLedgers } from '../src/plugin/ledgers';
import { parseUsd } from '../src/money';
import { parseRateCard } from '../src/pricing/ratecard';
import defaultDoc from '../ratecards/default.json';
import { handlerLedger, variantLedger } from './support/priced-ledgers';
import { installOfflineTiktoken, startOpenAIServer, type OpenAIServer } from './support/openai-server';
import { countResponsesInputTokens } from './support/openai-responses';

/**
 * ChatOpenAI on the Responses API (`useResponsesApi: true`; @langchain/openai also switches to it by
 * itself for built-in tools, Responses-only options and some models) against the loopback
 * `POST /v1/responses`: the call is charged the usage the provider reported, its cached input at the
 * cache price and its reasoning tokens as output, by the callback handler and by the metered model.
 * Card prices, nanos per token: input 2,000, cached input 500, output 4,000.
 */
const CARD = parseRateCard({
  ...defaultDoc,
  version: 'responses-test',
  models: {
    'gpt-4o-mini': { inputUsdPer1k: '0.002', outputUsdPer1k: '0.004', cachedInputUsdPer1k: '0.0005' },
    '*': { inputUsdPer1k: '0.1', outputUsdPer1k: '0.1' },
  },
});
const KEY = 'sk-responses';
const MANUAL = Array.from({ length: 200 }, (_, i) => `rule${i}`).join(' ');
const prompt = (): BaseMessage[] => [new SystemMessage(MANUAL), new HumanMessage('name three colours please')];
const REPLY_WORDS = 5; // "echo: name three colours please"
const CACHED = 128;
const REASONING = 7;

const MODES = ['invoke', 'invoke, streaming on', '.stream()'] as const;
type Mode = (typeof MODES)[number];

async function call(model: ChatOpenAI, how: Mode, options: Record<string, unknown> = {}): Promise<AIMessageChunk | BaseMessage> {
  if (how !== '.stream()') return model.invoke(prompt(), options);
  let message: AIMessageChunk | undefined;
  for await (const chunk of await model.stream(prompt(), options)) message = message ? message.concat(chunk) : chunk;
  return message!;
}

let openai: OpenAIServer;
let uninstallTiktoken: () => void;
let dir: string;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer({ apiKey: KEY });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-responses-'));
});
afterAll(async () => {
  await closeSharedLedgers();
  uninstallTiktoken?.();
  await openai?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => {
  openai.reset();
  openai.setResponsesUsage({ cachedTokens: CACHED, reasoningTokens: REASONING });
});

// Not `streaming: false` otherwise: @langchain/openai takes that as disableStreaming, and .stream() would not stream.
const chatOpenAI = (how: Mode, apiKey = KEY) =>
  new ChatOpenAI({ model: 'gpt-4o-mini', apiKey, configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 64, useResponsesApi: true, ...(how === 'invoke, streaming on' ? { streaming: true } : {}) });

/** The one Responses call the provider answered, and what it must cost. */
function expected(): { amount: bigint; input: number; output: number } {
  expect(openai.responsesCalls).toHaveLength(1);
  expect(openai.calls).toHaveLength(0);
  const u = openai.responsesCalls[0]!.usage!;
  const input = countResponsesInputTokens({ input: [{ role: 'system', content: MANUAL }, { role: 'user', content: 'name three colours please' }] });
  expect(u).toMatchObject({ input_tokens: input, input_tokens_details: { cached_tokens: CACHED }, output_tokens: REPLY_WORDS + REASONING, output_tokens_details: { reasoning_tokens: REASONING } });
  // 212 input tokens: 84 uncached × 2,000 + 128 cached × 500 + 12 output × 4,000 = 280,000 nanos.
  expect(input).toBe(212);
  return { amount: BigInt((input - CACHED) * 2000 + CACHED * 500 + (REPLY_WORDS + REASONING) * 4000), input, output: REPLY_WORDS + REASONING };
}

describe('the loopback Responses API', () => {
  it('refuses a wrong key (401) and a missing input (400), as the real API does; nothing is recorded', async () => {
    await expect(chatOpenAI('invoke', 'sk-wrong').invoke('hi')).rejects.toThrow(/401|Incorrect API key/);
    const res = await fetch(`${openai.baseURL}/responses`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'gpt-4o-mini' }) });
    expect(res.status).toBe(400);
    expect(openai.responsesCalls).toHaveLength(0);
  });
  it('answers LangChain with the documented usage, streamed (in response.completed) and not', async () => {
    for (const how of MODES) {
      openai.reset();
      openai.setResponsesUsage({ cachedTokens: CACHED, reasoningTokens: REASONING });
      const m = (await call(chatOpenAI(how), how)) as AIMessageChunk;
      expect([how, openai.responsesCalls.map((c) => c.stream)]).toEqual([how, [how !== 'invoke']]);
      expect(m.usage_metadata).toMatchObject({ input_tokens: 212, output_tokens: 12, input_token_details: { cache_read: CACHED }, output_token_details: { reasoning: REASONING } });
    }
  });
});

describe('BillingCallbackHandler on the Responses API', () => {
  const t = handlerLedger(CARD, 'conv-resp');
  const handler = t.handler;

  for (const how of MODES) {
    it(`${how}: the reported usage, cached input at the cache price, reasoning tokens as output`, async () => {
      const h = handler();
      await call(chatOpenAI(how), how, { callbacks: [h] });
      const e = expected();
      expect(h.charges).toHaveLength(1);
      const c = h.charges[0]!.charge;
      expect(c.metadata).toMatchObject({ inputTokens: e.input, outputTokens: e.output, cacheReadTokens: CACHED, usageSource: 'usage_metadata' });
      expect(c.amount).toBe(e.amount);
      expect(c.amount).toBe(280_000n);
      expect(parseUsd('10') - (await t.ledger.balance(t.customerId)).balance).toBe(e.amount);
    });
  }

  it.each(MODES)('%s, a server that reports no usage: LangChain makes it 0 / 0, which is not a usage; the call is charged the estimate, not nothing', async (how) => {
    openai.setResponsesUsage({ omitUsage: true });
    const h = handler();
    await call(chatOpenAI(how), how, { callbacks: [h] });
    expect(openai.responsesCalls).toHaveLength(1);
    expect(openai.responsesCalls[0]!.usage).toBeNull();
    const c = h.charges[0]!.charge;
    // The prompt estimate, and the reply "echo: name three colours please" (31 chars: ceil(31/4) = 8 tokens).
    const input = estimatePromptTokens(prompt());
    expect(c.metadata).toMatchObject({ inputTokens: input, outputTokens: 8, usageSource: 'estimate' });
    expect(c.amount).toBe(BigInt(input * 2000 + 8 * 4000));
  });
});

describe('metered chat model (the Flowise variants) on the Responses API', () => {
  const db = () => path.join(dir, 'variants.sqlite');
  const { customer, metered, tokenCharges } = variantLedger(db, CARD);

  for (const how of MODES) {
    it(`${how}: the reported usage, cached input at the cache price, reasoning tokens as output`, async () => {
      const id = await customer();
      await call(metered(id, chatOpenAI(how)), how);
      const e = expected();
      const [c, ...more] = await tokenCharges(id);
      expect(more).toEqual([]);
      expect(c!.metadata).toMatchObject({ inputTokens: e.input, outputTokens: e.output, cacheReadTokens: CACHED });
      expect(c!.amount).toBe(280_000n);
    });
  }

  it.each(MODES)('%s, a server that reports no usage: charged the estimate, not nothing', async (how) => {
    openai.setResponsesUsage({ omitUsage: true });
    const id = await customer();
    await call(metered(id, chatOpenAI(how)), how);
    expect(openai.responsesCalls).toHaveLength(1);
    const [c, ...more] = await tokenCharges(id);
    expect(more).toEqual([]);
    const input = estimatePromptTokens(prompt());
    expect(c!.metadata).toMatchObject({ inputTokens: input, outputTokens: 8 });
    expect(c!.amount).toBe(BigInt(input * 2000 + 8 * 4000));
  });
});
