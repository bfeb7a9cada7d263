import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { DynamicTool } from '@langchain/core/tools';
import { openFlowRun } from '../src/plugin/flow-run';
import { closeSharedLedgers, sharedLedger } from '../src/plugin/ledgers';
import { DEFAULT_REFUSAL_MESSAGES, REFUSAL_MARKER_KEY } from '../src/plugin/refusal';
import { formatUsd, parseUsd } from '../src/money';
import { priceChargeType, priceTokens } from '../src/pricing/price';
import { estimateTextTokens } from '../src/metering/estimate';
import { meterModel } from '../nodes/shared/metered-model';
import { FakeUsageChatModel } from '../src/metering/fake-model';
import { meterTool } from '../nodes/shared/metered-tool';
import { variantPath, variantSource, variantSources } from '../src/installer/variants';
import { installOfflineTiktoken, startOpenAIServer, type OpenAIServer } from './support/openai-server';
import { ANTHROPIC_KEY, startAnthropicServer, type AnthropicServer } from './support/anthropic-server';
import { ChatAnthropic } from '@langchain/anthropic';
import { AIMessageChunk } from '@langchain/core/messages';

/**
 * The metering the metered variants put on a provider's model and tools, with
 * a real ChatOpenAI against the loopback OpenAI-compatible server (calls counted
 * there), a real FlowRun and a real SQLite ledger.
 */
let openai: OpenAIServer;
let dir: string;
let uninstallTiktoken: () => void;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer();
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-variants-'));
});
afterAll(async () => {
  await closeSharedLedgers();
  uninstallTiktoken?.();
  await openai?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});
beforeEach(() => openai.reset());

const db = () => path.join(dir, 'ledger.sqlite');
async function customer(usd: string) {
  const id = `c-${randomUUID().slice(0, 8)}`;
  const { ledger } = await sharedLedger(db());
  await ledger.createCustomer({ id });
  await ledger.topUp({ customerId: id, amount: parseUsd(usd), idempotencyKey: `top-${id}` });
  return id;
}
function metered(customerId: string, runKey = randomUUID()) {
  const run = () => openFlowRun({ ledgerDatabase: db(), customerId, conversationId: 'conv', runKey, actor: 'test', runFee: { item: 'PrivateFlowRun', quantity: '1' }, checkSessions: false });
  const model = new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 50 });
  return { run, model: meterModel(model, { meter: run, nodeKey: 'llm_0', usesCustomerKey: false }) };
}

describe('metered chat model (instance metering)', () => {
  it('charges the run fee once and each call its exact tokens; the provider is called once per call', async () => {
    const id = await customer('1');
    const { model } = metered(id);
    const a = await model.invoke([new HumanMessage('hello metered')]);
    const b = await model.invoke([new HumanMessage('again')]);
    expect([a.content, b.content]).toEqual(['echo: hello metered', 'echo: again']);
    expect(openai.calls).toHaveLength(2);
    const { ledger } = await sharedLedger(db());
    const card = await ledger.activeRateCard();
    const tokens = openai.calls.reduce((s, c) => s + priceTokens(card, c.body.model, c.response!.usage!.prompt_tokens, c.response!.usage!.completion_tokens).amount, 0n);
    const spent = parseUsd('1') - (await ledger.balance(id)).balance;
    expect(formatUsd(spent)).toBe(formatUsd(priceChargeType(card, 'PrivateFlowRun', 1).amount + tokens));
  });

  it('a refused call is answered with the operator’s message and the marker, never reaches the provider, and the run stays refused', async () => {
    const id = await customer('0.01'); // the fee alone: fee + the call cannot be reserved
    const { model } = metered(id);
    const r = await model.invoke([new HumanMessage('too expensive')]);
    expect(r.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(r.response_metadata[REFUSAL_MARKER_KEY]).toEqual({ type: 'billing_refusal', kind: 'insufficientFunds', code: 'INSUFFICIENT_FUNDS' });
    // streaming too
    let streamed = '';
    for await (const chunk of await model.stream([new HumanMessage('stream it')])) streamed += String(chunk.content);
    expect(streamed).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(openai.calls).toHaveLength(0);
    expect((await (await sharedLedger(db())).ledger.balance(id)).balance).toBe(parseUsd('0.01'));
  });

  it('bindTools (ChatOpenAI builds a new instance) and streaming stay metered', async () => {
    const id = await customer('1');
    const { model } = metered(id);
    const bound = model.bindTools([{ type: 'function', function: { name: 'noop', description: 'does nothing', parameters: { type: 'object', properties: {} } } }]);
    await bound.invoke([new HumanMessage('with tools')]);
    let text = '';
    for await (const chunk of await model.stream([new HumanMessage('streamed call')])) text += String(chunk.content);
    expect(text).toBe('echo: streamed call');
    expect(openai.calls).toHaveLength(2);
    const { ledger } = await sharedLedger(db());
    const settles = (await ledger.statement(id)).filter((e) => e.type === 'settle' && e.chargeType !== 'PrivateFlowRun');
    expect(settles).toHaveLength(2);
  });

  it('a stream its consumer aborts in its own loop (LangChain never resumes the metered generator) is charged what streamed, with its fee; nothing stays held', async () => {
    const id = await customer('1');
    const { model } = metered(id);
    const ac = new AbortController();
    let received = '';
    const err = await (async () => {
      for await (const chunk of await model.stream([new HumanMessage('a b c d e f g h i j')], { signal: ac.signal })) {
        received += String(chunk.content);
        if (received.split(' ').filter(Boolean).length === 3) ac.abort();
      }
    })().catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/abort/i);
    expect(openai.calls).toHaveLength(1);
    const { ledger } = await sharedLedger(db());
    const card = await ledger.activeRateCard();
    // The run ends 2 s after its last call (FlowRun's idle end): the rest of its reservation goes back.
    await vi.waitFor(async () => expect((await ledger.balance(id)).held).toBe(0n), { timeout: 6000, interval: 200 });
    const settles = (await ledger.statement(id)).filter((e) => e.type === 'settle');
    const charges = await Promise.all(settles.map((e) => ledger.getCharge(e.chargeId!)));
    const llm = charges.filter((c) => c.chargeType === 'tokens:gpt-4o-mini');
    expect(llm).toHaveLength(1);
    // "echo: ", "a ", "b ": the chunk in the consumer's hand is counted (the wrapper counts a chunk before yielding it).
    expect(llm[0]!.metadata).toMatchObject({ usageSource: 'stream cut short', outputTokens: estimateTextTokens(received) });
    expect(charges.filter((c) => c.chargeType === 'PrivateFlowRun').map((c) => c.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });
});

describe('metered ChatAnthropic: usage split over the stream’s events', () => {
  // Anthropic streams its usage in two events (message_start: the input tokens; message_delta: the output
  // tokens, input 0), and LangChain adds the chunks' usage up. A call is charged what LangChain reports for
  // the whole message, once, however it was made. Real ChatAnthropic against the loopback Messages API.
  let anthropic: AnthropicServer;
  beforeAll(async () => {
    anthropic = await startAnthropicServer();
  });
  afterAll(async () => {
    await anthropic?.close();
  });
  beforeEach(() => anthropic.reset());

  async function anthropicRun(streaming: boolean) {
    const id = await customer('1');
    const run = () => openFlowRun({ ledgerDatabase: db(), customerId: id, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false });
    const raw = new ChatAnthropic({ model: 'claude-3-5-haiku-20241022', apiKey: ANTHROPIC_KEY, anthropicApiUrl: anthropic.baseURL, maxRetries: 0, maxTokens: 50, streaming });
    return { id, model: meterModel(raw, { meter: run, nodeKey: 'llm_0', usesCustomerKey: false }) };
  }

  /** The customer's LLM charges, as (input, output) token pairs from their metadata, and what they cost. */
  async function llmCharges(id: string) {
    const { ledger } = await sharedLedger(db());
    const settles = (await ledger.statement(id)).filter((e) => e.type === 'settle');
    const charges = await Promise.all(settles.map((e) => ledger.getCharge(e.chargeId!)));
    return { ledger, charges: charges.map((c) => ({ amount: c.amount, tokens: [c.metadata.inputTokens, c.metadata.outputTokens] })) };
  }

  for (const [how, streaming] of [['model.stream()', false], ['invoke with streaming: true (Flowise’s default)', true]] as const) {
    it(`${how}: one provider call, charged once, its prompt included`, async () => {
      const { id, model } = await anthropicRun(streaming);
      let message: AIMessageChunk | undefined;
      if (how === 'model.stream()') {
        for await (const chunk of await model.stream([new HumanMessage('count my prompt too')])) message = message ? message.concat(chunk) : chunk;
      } else {
        message = (await model.invoke([new HumanMessage('count my prompt too')])) as AIMessageChunk;
      }
      expect(message!.content).toBe('echo: count my prompt too');
      expect(anthropic.calls).toHaveLength(1);
      expect(anthropic.calls[0]!.stream).toBe(true);
      // LangChain's message reports message_delta's output (cumulative: what Anthropic bills) plus message_start's
      // placeholder 1; the charge is what Anthropic bills: 7 input (3 + 4 words), 5 output ("echo: count my prompt too").
      const reported = message!.usage_metadata!;
      const billed = anthropic.calls[0]!.usage;
      expect([billed.input_tokens, billed.output_tokens]).toEqual([7, 5]);
      expect([reported.input_tokens, reported.output_tokens]).toEqual([7, 6]);
      const { ledger, charges } = await llmCharges(id);
      expect(charges.map((c) => c.tokens)).toEqual([[7, 5]]);
      const card = await ledger.activeRateCard();
      expect(charges[0]!.amount).toBe(priceTokens(card, 'claude-3-5-haiku-20241022', 7, 5).amount);
      expect(charges[0]!.amount).toBe(25_600n); // the default card: 7 × 800 + 5 × 4,000 nanos
      expect((await ledger.checkInvariants()).ok).toBe(true);
    });
  }

  it('streaming inside invoke, cut midway: the prompt and what was streamed are charged, once', async () => {
    const { id, model } = await anthropicRun(true);
    anthropic.cutNextStreamAfter(3);
    await expect(model.invoke([new HumanMessage('one two three four five six')])).rejects.toThrow();
    expect(anthropic.calls).toHaveLength(1);
    const { ledger } = await sharedLedger(db());
    const settles = (await ledger.statement(id)).filter((e) => e.type === 'settle');
    expect(settles).toHaveLength(1);
    const charge = await ledger.getCharge(settles[0]!.chargeId!);
    expect(charge.metadata).toMatchObject({ usageSource: 'stream cut short' });
    expect(charge.metadata.outputTokens).toBeGreaterThanOrEqual(3);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('without streaming: charged the usage of the one answer', async () => {
    const { id, model } = await anthropicRun(false);
    await model.invoke([new HumanMessage('plain call')]);
    expect(anthropic.calls).toHaveLength(1);
    const { charges } = await llmCharges(id);
    expect(charges.map((c) => c.tokens)).toEqual([[anthropic.calls[0]!.usage.input_tokens, anthropic.calls[0]!.usage.output_tokens]]);
  });

  it('the loopback API refuses a wrong key, as the real one does, and the refused call is not charged', async () => {
    const id = await customer('1');
    const run = () => openFlowRun({ ledgerDatabase: db(), customerId: id, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false });
    const model = meterModel(new ChatAnthropic({ model: 'claude-3-5-haiku-20241022', apiKey: 'sk-ant-wrong', anthropicApiUrl: anthropic.baseURL, maxRetries: 0, maxTokens: 50 }), { meter: run, nodeKey: 'llm_0', usesCustomerKey: false });
    await expect(model.invoke([new HumanMessage('x')])).rejects.toThrow(/x-api-key/);
    const { ledger } = await sharedLedger(db());
    expect((await ledger.balance(id)).balance).toBe(parseUsd('1'));
  });
});

describe('metered chat model: the hold covers the output limit set in the provider’s own field', () => {
  // Google's models take `maxOutputTokens`, Ollama's `numPredict`; each maps it to LangChain's standard
  // `ls_max_tokens`. A real LangChain chat model (the package's deterministic one) with such a field.
  class OwnLimitModel extends FakeUsageChatModel {
    maxOutputTokens = 20_000;
    override getLsParams(options: this['ParsedCallOptions']) {
      return { ...super.getLsParams(options), ls_max_tokens: this.maxOutputTokens };
    }
  }

  it('a call that may produce 20,000 tokens is held for them: refused where only 4,096 are covered, and the model is never called', async () => {
    const { ledger } = await sharedLedger(db());
    const card = await ledger.activeRateCard();
    // Enough for the call at the 4,096-token default, not at its own limit.
    const atDefault = priceTokens(card, 'gpt-4o-mini', 50, 4096).amount;
    const atLimit = priceTokens(card, 'gpt-4o-mini', 50, 20_000).amount;
    expect(atLimit).toBeGreaterThan(atDefault * 2n);
    const id = await customer(formatUsd(atDefault * 2n));
    const raw = new OwnLimitModel({ model: 'gpt-4o-mini' });
    const run = () => openFlowRun({ ledgerDatabase: db(), customerId: id, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false });
    const model = meterModel(raw, { meter: run, nodeKey: 'llm_0', usesCustomerKey: false });
    const r = await model.invoke([new HumanMessage('a long answer please')]);
    expect(r.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(raw.calls).toBe(0);
    expect((await ledger.balance(id)).balance).toBe(atDefault * 2n);
  });
});

describe('metered tool', () => {
  it('charges its price per call; a refused call does not run and answers with the refusal', async () => {
    const rich = await customer('1');
    let runs = 0;
    const make = (customerId: string) => {
      const run = () => openFlowRun({ ledgerDatabase: db(), customerId, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false });
      const tool = new DynamicTool({ name: 'calc', description: 'calc', func: async () => String(++runs) });
      return meterTool(tool, { meter: run, nodeKey: 'agent_0', price: { item: 'ObjectTransformer', quantity: '1' } });
    };
    expect(await make(rich).invoke('x')).toBe('1');
    const { ledger } = await sharedLedger(db());
    expect(formatUsd(parseUsd('1') - (await ledger.balance(rich)).balance)).toBe('0.01');
    const poor = await customer('0.005');
    expect(await make(poor).invoke('x')).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(runs).toBe(1);
  });
});

describe('install-time variant files', () => {
  it('a variant beside each chat model and tool that exports a nodeClass; LlamaIndex files and helpers are skipped', () => {
    const fc = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-fc-'));
    try {
      const put = (rel: string, code: string) => {
        fs.mkdirSync(path.dirname(path.join(fc, rel)), { recursive: true });
        fs.writeFileSync(path.join(fc, rel), code);
      };
      put('dist/nodes/chatmodels/ChatX/ChatX.js', 'exports.nodeClass = class {};');
      put('dist/nodes/chatmodels/ChatX/FlowiseChatX.js', 'exports.FlowiseChatX = class {};');
      put('dist/nodes/chatmodels/ChatX/ChatX_LlamaIndex.js', 'module.exports = { nodeClass: class {} };');
      put('dist/nodes/tools/Calc/Calc.js', 'module.exports = { nodeClass: class {} };');
      expect(variantSources(fc)).toEqual([
        { rel: path.join('dist/nodes/chatmodels/ChatX/ChatX.js'), factory: 'meteredModelModule' },
        { rel: path.join('dist/nodes/tools/Calc/Calc.js'), factory: 'meteredToolModule' },
      ]);
      expect(variantPath('dist/nodes/tools/Calc/Calc.js')).toBe('dist/nodes/tools/Calc/Calc.billing-metered.js');
      expect(variantSource('dist/nodes/tools/Calc/Calc.js', 'meteredToolModule')).toContain('require("../../billing/MeteredVariants/MeteredVariants.js").meteredToolModule(require("./Calc.js"))');
    } finally {
      fs.rmSync(fc, { recursive: true, force: true });
    }
  });
});
