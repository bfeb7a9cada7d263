import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { AIMessage, HumanMessage, SystemMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { RunnableLambda } from '@langchain/core/runnables';
import { CallbackManager } from '@langchain/core/callbacks/manager';
import { tool, type StructuredToolInterface } from '@langchain/core/tools';
import { BillingCallbackHandler } from '../src/metering/handler';
import type { BillingHandlerOptions } from '../src/metering/options';
import { billingRunConfig } from '../src/metering/run-config';
import { FakeUsageChatModel } from '../src/metering/fake-model';
import { BILLING_METADATA_KEYS } from '../src/langfuse/metadata';
import { estimatePromptTokens, estimateTextTokens, usageOf } from '../src/metering/estimate';
import { BillingError, InsufficientFundsError, QuotaExceededError } from '../src/errors';
import { parseUsd } from '../src/money';
import { priceChargeType, priceComputeMs, priceTokens } from '../src/pricing/price';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import type { AdmissionGate } from '../src/quota/gate';
import type { Charge } from '../src/ledger/types';
import { BACKENDS } from './support/backends';

import { installOfflineTiktoken, sequenceScript, startOpenAIServer, type OpenAIServer } from './support/openai-server';
import { ANTHROPIC_KEY, startAnthropicServer, type AnthropicServer } from './support/anthropic-server';
import { ChatAnthropic } from '@langchain/anthropic';

let openai: OpenAIServer;
let anthropic: AnthropicServer;
let uninstallTiktoken: () => void;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer();
  anthropic = await startAnthropicServer();
});
afterAll(async () => {
  uninstallTiktoken?.();
  await openai?.close();
  await anthropic?.close();
});
beforeEach(() => {
  openai.reset();
  openai.setScript(null);
  openai.setOptions({ delayMs: 0, chunkDelayMs: 0, interrupt: undefined, wordsPerChunk: 1 });
});

const usd = parseUsd;

function chatOpenAI(extra: Partial<ConstructorParameters<typeof ChatOpenAI>[0]> = {}): ChatOpenAI {
  return new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 64, ...extra });
}

function makeTool(name: string, fn: (value: string) => string): StructuredToolInterface {
  return tool(async (input: Record<string, unknown>) => fn(String(input.value)), {
    name,
    description: `${name} tool`,
    schema: { type: 'object', properties: { value: { type: 'string' } }, required: ['value'] },
  }) as unknown as StructuredToolInterface;
}

/** Every charge the ledger holds for the customer (via the statement's settle/charge entries). */
async function ledgerCharges(ledger: SqlLedger, customerId: string): Promise<Charge[]> {
  const entries = await ledger.statement(customerId);
  const ids = entries.filter((e) => e.chargeId && (e.type === 'settle' || e.type === 'charge')).map((e) => e.chargeId!);
  return Promise.all(ids.map((id) => ledger.getCharge(id)));
}

const sum = (xs: bigint[]) => xs.reduce((a, b) => a + b, 0n);

describe.each(BACKENDS)('BillingCallbackHandler on $name', (backend) => {
  let ledger: SqlLedger;
  const opened: SqlLedger[] = [];
  let customerId: string;

  beforeEach(async () => {
    ledger = await backend.open(await backend.freshTarget());
    opened.push(ledger);
    customerId = `c-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id: customerId });
    await ledger.topUp({ customerId, amount: usd('10'), idempotencyKey: `top-${customerId}` });
  });
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });

  const handler = (extra: Partial<BillingHandlerOptions> = {}) =>
    new BillingCallbackHandler({ ledger, customerId, conversationId: 'conv-1', computeTime: { reserveMs: 1000 }, onError: () => undefined, ...extra });

  it('validates its options and names the bad field', () => {
    expect(() => new BillingCallbackHandler({ ledger, customerId: '', conversationId: 'c' })).toThrow(/customerId/);
    // An id the ledger can never hold is refused when the handler is built, not at the run as CUSTOMER_NOT_FOUND.
    for (const bad of ['acme corp', 'acme/1', ' acme', '-acme']) {
      expect(() => new BillingCallbackHandler({ ledger, customerId: bad, conversationId: 'c' }), bad).toThrow(/customerId: customer id must be/);
    }
    expect(() => new BillingCallbackHandler({ ledger, customerId: 'x', conversationId: 'c', tools: { t: { chargeType: 'Nope' as never } } })).toThrow(/tools\.t\.chargeType/);
  });

  it('refuses at construction what would otherwise fail at the run or forge lines: USD over the limit, an inexact tool quantity, control characters, a non-HTTP Langfuse URL', async () => {
    const lf = { publicKey: 'pk-lf-1', secretKey: 'sk-lf-never-shown' };
    const bad: Array<[Partial<BillingHandlerOptions>, RegExp]> = [
      [{ runBudgetUsd: '2000000000' }, /runBudgetUsd: runBudgetUsd "2000000000" exceeds the limit/],
      [{ runFee: { type: 'PaidPublicFlowRun', priceUsd: '99999999999' } }, /runFee\.priceUsd: .*exceeds the limit/],
      [{ tools: { t: { chargeType: 'Inference', quantity: 1e30 } } }, /tools\.t\.quantity/],
      [{ actor: 'ops\nforged line' }, /actor: actor must not contain control characters/],
      [{ costCenter: 'cc\u0000' }, /costCenter/],
      [{ usageCategory: '\u001b[31mred' }, /usageCategory/],
      [{ planTier: 'pro\n' }, /planTier/],
      [{ langfuse: { ...lf, baseUrl: 'ftp://langfuse.example' } }, /langfuse\.baseUrl: .*http/],
      [{ langfuse: { ...lf, baseUrl: 'javascript:alert(1)' } }, /langfuse\.baseUrl/],
      // A 1 ms hold expired before the model answered: the call ran and its settle was refused (unpaid).
      [{ holdTtlMs: 1 }, /holdTtlMs: holdTtlMs must be at least 60000/],
    ];
    for (const [extra, message] of bad) {
      const err = (() => {
        try {
          handler(extra);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err, JSON.stringify(extra)).toBeInstanceOf(BillingError);
      expect((err as BillingError).code).toBe('VALIDATION_ERROR');
      expect((err as BillingError).message).toMatch(message);
      expect(JSON.stringify({ m: (err as BillingError).message, d: (err as BillingError).details })).not.toContain(lf.secretKey);
    }
    // The limits themselves are fine, and a run with them is metered.
    const h = handler({ runBudgetUsd: '1000000000', runFee: { type: 'PaidPublicFlowRun', priceUsd: '1000000000' }, tools: { t: { chargeType: 'Inference', quantity: Number.MAX_SAFE_INTEGER } }, actor: 'ops team', langfuse: undefined });
    expect(h.options.runBudgetUsd).toBe('1000000000');
  });

  it('LCEL chain with a usage-reporting model: fee + tokens + compute, exactly, once', async () => {
    const card = await ledger.activeRateCard();
    const model = new FakeUsageChatModel({ model: 'gpt-4o-mini' });
    const prompt = ChatPromptTemplate.fromMessages([['system', 'You are terse.'], ['human', '{question}']]);
    const chain = prompt.pipe(model).pipe(new StringOutputParser());
    const h = handler();
    const out = await chain.invoke({ question: 'What is the capital of France' }, billingRunConfig(h));
    expect(out).toBe('echo: What is the capital of France');

    const expected = model.compute([new SystemMessage('You are terse.'), new HumanMessage('What is the capital of France')]);
    const tokens = priceTokens(card, 'gpt-4o-mini', expected.inputTokens, expected.outputTokens).amount;
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    const charges = await ledgerCharges(ledger, customerId);
    expect(charges.map((c) => c.chargeType).sort()).toEqual(['PrivateFlowRun', 'compute', 'tokens:gpt-4o-mini']);
    const llm = charges.find((c) => c.chargeType === 'tokens:gpt-4o-mini')!;
    expect(llm.amount).toBe(tokens);
    expect(llm.metadata).toMatchObject({ inputTokens: expected.inputTokens, outputTokens: expected.outputTokens, usageSource: 'usage_metadata' });
    const compute = charges.find((c) => c.chargeType === 'compute')!;
    expect(compute.amount).toBe(priceComputeMs(card, BigInt(compute.quantity!)).amount);
    expect(charges.find((c) => c.chargeType === 'PrivateFlowRun')!.amount).toBe(fee);

    const b = await ledger.balance(customerId);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('10') - fee - tokens - compute.amount);
    expect(h.runs).toHaveLength(1);
    expect(h.runs[0]!.cost).toBe(fee + tokens + compute.amount);
    expect(h.inFlight).toEqual({ roots: 0, steps: 0 });
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('no usage reported: charges the documented estimate of what was produced', async () => {
    const card = await ledger.activeRateCard();
    const model = new FakeUsageChatModel({ reportUsage: false });
    const h = handler({ runFee: false, computeTime: false });
    const msgs = [new HumanMessage('hello there world')];
    await model.invoke(msgs, { callbacks: [h] });
    const [c] = await ledgerCharges(ledger, customerId);
    const inT = estimatePromptTokens(msgs);
    const outT = estimateTextTokens('echo: hello there world');
    expect(c!.metadata).toMatchObject({ usageSource: 'estimate', inputTokens: inT, outputTokens: outT });
    expect(c!.amount).toBe(priceTokens(card, 'gpt-4o-mini', inT, outT).amount);
  });

  it('ChatOpenAI on the loopback server, non-streaming and streaming: settles with the server usage', async () => {
    const card = await ledger.activeRateCard();
    for (const streaming of [false, true]) {
      openai.reset();
      const h = handler({ runFee: false, computeTime: false });
      const model = chatOpenAI({ streaming, streamUsage: true });
      const res = await model.invoke([new SystemMessage('Be brief.'), new HumanMessage('name three colours please')], { callbacks: [h] });
      expect(String(res.content)).toBe('echo: name three colours please');
      expect(openai.callCount()).toBe(1);
      const usage = openai.calls[0]!.response!.usage!;
      expect(h.charges).toHaveLength(1);
      expect(h.charges[0]!.charge.amount).toBe(priceTokens(card, 'gpt-4o-mini', usage.prompt_tokens, usage.completion_tokens).amount);
      // The hold was the estimate: prompt estimate + max_tokens (64) at the model's prices.
      const hold = await ledger.getHold(h.charges[0]!.charge.holdId!);
      expect(hold.amount).toBe(priceTokens(card, 'gpt-4o-mini', estimatePromptTokens([{ content: 'Be brief.' }, { content: 'name three colours please' }]), 64).amount);
    }
    expect((await ledger.balance(customerId)).held).toBe(0n);
  });

  it('ChatAnthropic on the loopback Messages API (usage split over its stream events): each call settles once with the usage Anthropic bills, prompt included', async () => {
    const card = await ledger.activeRateCard();
    const model = 'claude-3-5-haiku-20241022';
    for (const how of ['invoke', 'invoke, streaming on', '.stream()'] as const) {
      anthropic.reset();
      const h = handler({ runFee: false, computeTime: false });
      const m = new ChatAnthropic({ model, apiKey: ANTHROPIC_KEY, anthropicApiUrl: anthropic.baseURL, maxRetries: 0, maxTokens: 64, streaming: how === 'invoke, streaming on' });
      let message;
      if (how === '.stream()') {
        for await (const chunk of await m.stream([new HumanMessage('name three colours please')], { callbacks: [h] })) message = message ? message.concat(chunk) : chunk;
      } else {
        message = await m.invoke([new HumanMessage('name three colours please')], { callbacks: [h] });
      }
      expect(anthropic.calls, how).toHaveLength(1);
      const reported = message!.usage_metadata!;
      const billed = anthropic.calls[0]!.usage;
      expect(reported.input_tokens, how).toBe(billed.input_tokens);
      // A stream's message reports message_start's placeholder 1 on top of message_delta's cumulative count.
      expect(reported.output_tokens, how).toBe(billed.output_tokens + (how === 'invoke' ? 0 : 1));
      expect(h.charges, how).toHaveLength(1);
      expect(h.charges[0]!.charge.metadata, how).toMatchObject({ inputTokens: 7, outputTokens: 5 });
      // The default card: 7 × 800 + 5 × 4,000 nanos.
      expect(h.charges[0]!.charge.amount, how).toBe(25_600n);
      expect(h.charges[0]!.charge.amount, how).toBe(priceTokens(card, model, billed.input_tokens, billed.output_tokens).amount);
    }
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('.stream() through an LCEL chain is metered like invoke', async () => {
    const card = await ledger.activeRateCard();
    const h = handler({ runFee: false, computeTime: false });
    const chain = ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(chatOpenAI({ streamUsage: true })).pipe(new StringOutputParser());
    let text = '';
    for await (const piece of await chain.stream({ q: 'one two three four' }, { callbacks: [h] })) text += piece;
    expect(text).toBe('echo: one two three four');
    const usage = openai.calls[0]!.response!.usage!;
    expect(h.charges.map((c) => c.charge.amount)).toEqual([priceTokens(card, 'gpt-4o-mini', usage.prompt_tokens, usage.completion_tokens).amount]);
  });

  it('a streamed tool-call turn whose provider reports no usage is charged at least the estimate of its tool calls and tool definitions', async () => {
    const card = await ledger.activeRateCard();
    openai.setScript(sequenceScript([{ tool_calls: [{ name: 'lookup', arguments: { value: 'the capital city of France' } }] }]));
    const lookup = makeTool('lookup', (v) => v);
    const h = handler({ runFee: false, computeTime: false });
    // streamUsage: false: no usage from the server; LangChain then estimates the text only (none here: 0 output tokens).
    const ai = (await chatOpenAI({ streaming: true, streamUsage: false }).bindTools([lookup]).invoke('call the tool', { callbacks: [h] })) as AIMessage;
    expect(ai.tool_calls?.map((c) => c.name)).toEqual(['lookup']);
    expect(openai.callCount()).toBe(1);
    const c = h.charges[0]!.charge;
    const out = estimateTextTokens(`lookup ${JSON.stringify({ value: 'the capital city of France' })}`);
    expect(c.metadata).toMatchObject({ usageSource: 'estimatedTokenUsage', outputTokens: out });
    // The prompt side counts the tool definition sent with the call (our estimate), not only the message text.
    expect(c.metadata.inputTokens as number).toBeGreaterThan(estimatePromptTokens([{ content: 'call the tool' }]));
    expect(c.amount).toBe(priceTokens(card, 'gpt-4o-mini', c.metadata.inputTokens as number, out).amount);
  });

  it('a stream cut short is charged the prompt estimate plus the streamed tokens', async () => {
    const card = await ledger.activeRateCard();
    openai.setOptions({ interrupt: { afterChunks: 3, mode: 'destroy' } });
    const h = handler({ runFee: false, computeTime: false });
    const msgs = [new HumanMessage('alpha beta gamma delta epsilon zeta eta theta')];
    await expect(async () => {
      for await (const _ of await chatOpenAI({ streaming: true }).stream(msgs, { callbacks: [h] })) void _;
    }).rejects.toThrow();
    expect(h.charges).toHaveLength(1);
    const c = h.charges[0]!.charge;
    // 3 one-word chunks arrived ("echo: ", "alpha ", "beta ") → max(3 chunks, estimate of the streamed text) tokens.
    const produced = Math.max(3, estimateTextTokens('echo: alpha beta '));
    const inT = estimatePromptTokens(msgs);
    expect(c.metadata).toMatchObject({ usageSource: 'estimate', outputTokens: produced, inputTokens: inT, note: 'stream cut short' });
    expect(c.amount).toBe(priceTokens(card, 'gpt-4o-mini', inT, produced).amount);
    expect((await ledger.balance(customerId)).held).toBe(0n);
  });

  it('a stream aborted mid-way (a model or a chain) is charged what streamed and its run ends: nothing stays held', async () => {
    const card = await ledger.activeRateCard();
    openai.setOptions({ chunkDelayMs: 20 });
    const q = 'one two three four five six seven eight nine ten eleven twelve';
    const runnables = {
      model: () => ({ run: chatOpenAI({ streaming: true, streamUsage: true }), input: q as unknown }),
      chain: () => ({ run: ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(chatOpenAI({ streaming: true, streamUsage: true })).pipe(new StringOutputParser()), input: { q } as unknown }),
    };
    for (const [root, make] of Object.entries(runnables)) {
      openai.reset();
      const h = handler();
      const { run, input } = make();
      const ac = new AbortController();
      let texts = 0;
      const err = await (async () => {
        // LangChain ends neither the model's run nor the chain's when a stream is aborted: the handler must see the signal.
        for await (const piece of await (run as { stream(i: unknown, c: object): Promise<AsyncIterable<unknown>> }).stream(input, { ...billingRunConfig(h), signal: ac.signal })) {
          const text = typeof piece === 'string' ? piece : String((piece as { content?: unknown }).content ?? '');
          if (text && ++texts === 3) ac.abort();
        }
      })().catch((e: unknown) => e);
      expect((err as Error)?.message, root).toMatch(/abort/i);
      expect(openai.callCount()).toBe(1);
      // The run is over once it is listed (its end captures the fee and compute time after leaving `inFlight`).
      await vi.waitFor(() => expect(h.runs, root).toHaveLength(1), { timeout: 5000 });
      expect(h.inFlight, root).toEqual({ roots: 0, steps: 0 });
      expect((await ledger.balance(customerId)).held, root).toBe(0n);
      const tokens = h.charges.filter((c) => c.kind === 'llm');
      expect(tokens, root).toHaveLength(1);
      expect(tokens[0]!.charge.metadata).toMatchObject({ note: 'stream cut short', usageSource: 'estimate' });
      // The chunk in the consumer's hand when it aborted never reaches handleLLMNewToken (LangChain calls it after the yield): counted all the same.
      const out = tokens[0]!.charge.metadata.outputTokens as number;
      expect(out).toBeGreaterThanOrEqual(texts);
      expect(tokens[0]!.charge.amount).toBe(priceTokens(card, 'gpt-4o-mini', tokens[0]!.charge.metadata.inputTokens as number, out).amount);
      // The run was answered in part: it pays its fee and compute time, like any run that ended in an error.
      expect(h.charges.map((c) => c.kind).sort(), root).toEqual(['compute', 'fee', 'llm']);
      expect(h.runs.at(-1)).toMatchObject({ failed: true, refused: false });
    }
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a stream dropped with break before any token was reported ends nothing, but once its reservation expired a later refusal of the customer is immediate, not a wait for it', async () => {
    const short = await backend.open(await backend.freshTarget(), { holdTtlMs: 300 });
    opened.push(short);
    const c = `brk-${randomUUID().slice(0, 8)}`;
    await short.createCustomer({ id: c });
    await short.topUp({ customerId: c, amount: usd('0.05'), idempotencyKey: `top-${c}` });
    openai.setOptions({ chunkDelayMs: 10 });
    const h = new BillingCallbackHandler({ ledger: short, customerId: c, conversationId: 'c', computeTime: false, onError: () => undefined });
    for await (const _ of await chatOpenAI({ streaming: true }).stream('one two three four five six', billingRunConfig(h))) break;
    // LangChain reports nothing for a dropped stream, and this one broke on its first chunk (the role chunk, never
    // reported): like a call still waiting for its answer, it keeps its reservation alive while younger than its
    // lifetime (300 ms), then lets it lapse (about 1.6 lifetimes at most). The run stays in flight until then.
    expect(h.inFlight.roots).toBe(1);
    await new Promise((r) => setTimeout(r, 700));
    const calls = openai.callCount();
    // A call no balance can cover: refused; nothing is in flight that could ever return money.
    const poor = new BillingCallbackHandler({ ledger: short, customerId: c, conversationId: 'c', computeTime: false, fundsWaitMs: 5000 });
    const t0 = performance.now();
    const err = await chatOpenAI({ model: 'gpt-4o', maxTokens: 100_000 }).invoke('hello', billingRunConfig(poor)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InsufficientFundsError);
    expect(performance.now() - t0).toBeLessThan(2000);
    expect(openai.callCount()).toBe(calls);
    expect((await short.balance(c)).held).toBe(0n);
  });

  it('a run longer than its reservation’s lifetime: every call is still paid (steps drawing on the reservation keep it alive)', async () => {
    const short = await backend.open(await backend.freshTarget(), { holdTtlMs: 600 });
    opened.push(short);
    const c = `long-${randomUUID().slice(0, 8)}`;
    await short.createCustomer({ id: c });
    await short.topUp({ customerId: c, amount: usd('5'), idempotencyKey: `top-${c}` });
    const model = new FakeUsageChatModel({ model: 'gpt-4o-mini' });
    // The run budget is reserved at the start and covers every call: no step writes to the ledger before its call.
    const agent = RunnableLambda.from(async (q: string, config) => {
      for (let t = 0; t < 5; t++) {
        await new Promise((r) => setTimeout(r, 250));
        await model.invoke([new HumanMessage(`${q} ${t}`)], config);
      }
      return 'done';
    });
    const h = new BillingCallbackHandler({ ledger: short, customerId: c, conversationId: 'c', runBudgetUsd: '1', computeTime: false, onError: () => undefined });
    expect(await agent.invoke('turn', billingRunConfig(h))).toBe('done');
    expect(h.failures.map((f) => (f.error as Error).message)).toEqual([]);
    const all = await ledgerCharges(short, c);
    expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o-mini')).toHaveLength(model.calls);
    expect(all.filter((x) => x.chargeType === 'PrivateFlowRun')).toHaveLength(1);
    const b = await short.balance(c);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('5') - sum(all.map((x) => x.amount)));
    expect((await short.checkInvariants()).ok).toBe(true);
  });

  it('a call that fails before any output releases its hold', async () => {
    openai.setScript(() => ({ errorStatus: 500 }));
    const h = handler({ runFee: false, computeTime: false });
    await expect(chatOpenAI().invoke('hi', { callbacks: [h] })).rejects.toThrow();
    expect(h.charges).toHaveLength(0);
    const b = await ledger.balance(customerId);
    expect(b).toMatchObject({ balance: usd('10'), held: 0n });
    expect((await ledger.statement(customerId)).map((e) => e.type)).toEqual(['topup', 'hold', 'release']);
  });

  it('insufficient funds: the error propagates and the model server is never called', async () => {
    const poor = `p-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id: poor });
    await ledger.topUp({ customerId: poor, amount: usd('0.012'), idempotencyKey: `top-${poor}` });
    // Fee $0.01 fits; the hold for gpt-4o (4,096 output tokens ≈ $0.04) does not.
    const h = new BillingCallbackHandler({ ledger, customerId: poor, conversationId: 'c', computeTime: false });
    const chain = ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(chatOpenAI({ model: 'gpt-4o', maxTokens: undefined }));
    const err = await chain.invoke({ q: 'hello' }, { callbacks: [h] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InsufficientFundsError);
    expect((err as BillingError).code).toBe('INSUFFICIENT_FUNDS');
    expect(openai.callCount()).toBe(0);
    const b = await ledger.balance(poor);
    // A refused run pays no fee: the fee hold was released.
    expect(b).toMatchObject({ balance: usd('0.012'), held: 0n });
    expect(h.inFlight).toEqual({ roots: 0, steps: 0 });
    expect(h.runs[0]).toMatchObject({ refused: true, cost: 0n });
  });

  it('admission: a refusing gate stops the run before anything is charged; admission fields reach child runs', async () => {
    const refusing: AdmissionGate = {
      admitRun: async () => {
        throw new QuotaExceededError({ customerId, sessionsUsed: 25, sessionsLimit: 25, periodEnd: '2026-12-01T00:00:00.000Z' });
      },
    };
    const model = new FakeUsageChatModel();
    const chain = ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(model);
    await expect(chain.invoke({ q: 'x' }, { callbacks: [handler({ gate: refusing })] })).rejects.toBeInstanceOf(QuotaExceededError);
    expect(model.calls).toBe(0);
    expect((await ledger.statement(customerId)).map((e) => e.type)).toEqual(['topup']);

    let admitted = 0;
    const gate: AdmissionGate = {
      admitRun: async (i) => {
        admitted++;
        return { session: 'new', sessionId: `s-${i.conversationId}`, tier: 'starter', sessionsUsed: 3, sessionsLimit: 1000, sessionsRemaining: 997, periodStart: null, periodEnd: null, managedModels: true };
      },
    };
    const seen: Array<Record<string, unknown> | undefined> = [];
    const spy = { name: 'spy', awaitHandlers: true, handleChatModelStart: (...a: unknown[]) => void seen.push(a[6] as Record<string, unknown>) };
    await chain.invoke({ q: 'x' }, { callbacks: [handler({ gate }), spy as never] });
    expect(admitted).toBe(1); // once per root run, not per step
    expect(seen[0]).toMatchObject({
      [BILLING_METADATA_KEYS.customerId]: customerId,
      [BILLING_METADATA_KEYS.planTier]: 'starter',
      [BILLING_METADATA_KEYS.quotaRemaining]: 997,
      [BILLING_METADATA_KEYS.rateCardVersion]: '2026-12-default',
    });
    expect(seen[0]![BILLING_METADATA_KEYS.availableUsd]).toMatch(/^9\.98/);
  });

  it('billingRunConfig over a base whose callbacks are a CallbackManager (or an array already holding the handler) still puts the billing handler first', async () => {
    const gate: AdmissionGate = {
      admitRun: async () => ({ session: 'new', sessionId: 's', tier: 'starter', sessionsUsed: 1, sessionsLimit: 1000, sessionsRemaining: 999, periodStart: null, periodEnd: null, managedModels: true }),
    };
    const chain = ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(new FakeUsageChatModel());
    for (const shape of ['manager', 'array'] as const) {
      const seen: Array<Record<string, unknown> | undefined> = [];
      // A copy, as langfuse-langchain makes when it builds the generation.
      const spy = { name: 'spy', awaitHandlers: true, handleChatModelStart: (...a: unknown[]) => void seen.push({ ...(a[6] as Record<string, unknown>) }) };
      const h = handler({ gate });
      const callbacks = shape === 'manager' ? new CallbackManager(undefined, { handlers: [spy as never], inheritableHandlers: [spy as never] }) : [spy as never, h];
      await chain.invoke({ q: 'x' }, billingRunConfig(h, { callbacks }));
      // The spy reads the call's metadata after the billing handler added the admission fields to it.
      expect(seen[0], shape).toMatchObject({ [BILLING_METADATA_KEYS.planTier]: 'starter', [BILLING_METADATA_KEYS.quotaRemaining]: 999 });
      expect(h.runs).toHaveLength(1);
    }
  });

  it('paid public run fee and free public run fee follow the ChargeType formulas', async () => {
    const model = new FakeUsageChatModel();
    await model.invoke('x', { callbacks: [handler({ runFee: { type: 'PaidPublicFlowRun', priceUsd: '12' }, computeTime: false })] });
    await model.invoke('x', { callbacks: [handler({ runFee: 'FreePublicFlowRun', computeTime: false })] });
    const fees = (await ledgerCharges(ledger, customerId)).filter((c) => c.chargeType?.endsWith('FlowRun'));
    expect(fees.map((c) => [c.chargeType, c.amount])).toEqual([
      ['PaidPublicFlowRun', usd('3.15')],
      ['FreePublicFlowRun', usd('0.28')],
    ]);
  });

  it('tool-calling agent loop: several LLM turns and tools, each priced; a failing tool is released', async () => {
    const card = await ledger.activeRateCard();
    openai.setScript(
      sequenceScript([
        { tool_calls: [{ name: 'add', arguments: { value: '2+3' } }, { name: 'lookup', arguments: { value: 'paris' } }] },
        { tool_calls: [{ name: 'broken', arguments: { value: 'x' } }] },
        { tool_calls: [{ name: 'lookup', arguments: { value: 'rome' } }] },
        'Paris is 5, Rome is fine.',
      ]),
    );
    const tools = [
      makeTool('add', () => '5'),
      makeTool('lookup', (v) => `${v}: found`),
      makeTool('broken', () => {
        throw new Error('tool exploded');
      }),
    ];
    const byName = new Map(tools.map((t) => [t.name, t]));
    const llm = chatOpenAI().bindTools(tools);
    const agent = RunnableLambda.from(async (question: string, config) => {
      const messages: BaseMessage[] = [new HumanMessage(question)];
      for (let turn = 0; turn < 6; turn++) {
        const ai = (await llm.invoke(messages, config)) as AIMessage;
        messages.push(ai);
        if (!ai.tool_calls?.length) return String(ai.content);
        for (const call of ai.tool_calls) {
          let content: string;
          try {
            content = String(await byName.get(call.name)!.invoke(call.args, config));
          } catch (e) {
            content = `error: ${(e as Error).message}`;
          }
          messages.push(new ToolMessage({ content, tool_call_id: call.id! }));
        }
      }
      throw new Error('agent did not finish');
    }).withConfig({ runName: 'agent' });

    const h = handler({ tools: { add: { chargeType: 'ObjectTransformer', quantity: 1 }, lookup: { chargeType: 'Inference', quantity: 2 }, broken: { chargeType: 'Zipper', quantity: '50' } } });
    const answer = await agent.invoke('What are Paris and Rome?', billingRunConfig(h));
    expect(answer).toBe('Paris is 5, Rome is fine.');
    expect(openai.callCount()).toBe(4);

    const charges = await ledgerCharges(ledger, customerId);
    const llmCharges = charges.filter((c) => c.chargeType === 'tokens:gpt-4o-mini');
    expect(llmCharges.map((c) => c.amount)).toEqual(openai.calls.map((c) => priceTokens(card, 'gpt-4o-mini', c.response!.usage!.prompt_tokens, c.response!.usage!.completion_tokens).amount));
    expect(charges.filter((c) => c.chargeType === 'ObjectTransformer').map((c) => c.amount)).toEqual([usd('0.01')]);
    expect(charges.filter((c) => c.chargeType === 'Inference').map((c) => c.amount)).toEqual([usd('0.04'), usd('0.04')]);
    expect(charges.filter((c) => c.chargeType === 'Zipper')).toHaveLength(0);
    const entries = await ledger.statement(customerId);
    expect(entries.filter((e) => e.type === 'release' && e.chargeType === 'Zipper')).toHaveLength(1);
    // One root run: one fee, one compute charge.
    expect(charges.filter((c) => c.chargeType === 'PrivateFlowRun')).toHaveLength(1);
    expect(charges.filter((c) => c.chargeType === 'compute')).toHaveLength(1);
    const b = await ledger.balance(customerId);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('10') - sum(charges.map((c) => c.amount)));
    expect(h.runs[0]!.cost).toBe(sum(charges.map((c) => c.amount)));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('idempotency: replaying callbacks with the same run ids charges once (same handler or a new one)', async () => {
    const card = await ledger.activeRateCard();
    const runId = randomUUID();
    const chainId = randomUUID();
    const msgs = [[new HumanMessage('replay me')]];
    const extra = { invocation_params: { model: 'gpt-4o-mini', max_tokens: 10 } };
    const result = { generations: [[{ text: 'ok', message: new AIMessage({ content: 'ok', usage_metadata: { input_tokens: 7, output_tokens: 2, total_tokens: 9 } }) }]] };
    const replay = async (h: BillingCallbackHandler) => {
      await h.handleChainStart({ lc: 1, type: 'not_implemented', id: ['x'] }, {}, chainId, undefined, [], {});
      await h.handleChatModelStart({ lc: 1, type: 'not_implemented', id: ['m'] }, msgs, runId, chainId, extra, [], {});
      await h.handleChatModelStart({ lc: 1, type: 'not_implemented', id: ['m'] }, msgs, runId, chainId, extra, [], {});
      await h.handleLLMEnd(result as never, runId);
      await h.handleLLMEnd(result as never, runId);
      await h.handleChainEnd({}, chainId);
    };
    const h1 = handler({ computeTime: false, messageId: 'msg-1' });
    await replay(h1);
    await replay(h1);
    await replay(handler({ computeTime: false, messageId: 'msg-1' }));
    const charges = await ledgerCharges(ledger, customerId);
    expect(charges.map((c) => c.chargeType).sort()).toEqual(['PrivateFlowRun', 'tokens:gpt-4o-mini']);
    expect(charges.find((c) => c.chargeType === 'tokens:gpt-4o-mini')!.amount).toBe(priceTokens(card, 'gpt-4o-mini', 7, 2).amount);
    expect((await ledger.balance(customerId)).held).toBe(0n);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('50 concurrent runs for one customer whose balance fits only some: exact, never overdrawn, refused runs never reach the server', async () => {
    const card = await ledger.activeRateCard();
    const cust = `many-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id: cust });
    // Per run: fee $0.01 + compute reserve (1 s = $0.000833…) + hold ≈ prompt + 64 output tokens of gpt-4o.
    await ledger.topUp({ customerId: cust, amount: usd('0.5'), idempotencyKey: `top-${cust}` });
    const h = new BillingCallbackHandler({ ledger, customerId: cust, conversationId: 'conv', computeTime: { reserveMs: 1000 }, onError: () => undefined });
    openai.setOptions({ delayMs: 5 });
    const chain = ChatPromptTemplate.fromMessages([['human', 'question {i} with a few words']]).pipe(chatOpenAI({ model: 'gpt-4o', maxTokens: 64 })).pipe(new StringOutputParser());
    const results = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => chain.invoke({ i }, billingRunConfig(h))));
    const ok = results.filter((r) => r.status === 'fulfilled').length;
    const refused = results.filter((r) => r.status === 'rejected');
    expect(ok).toBeGreaterThan(0);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InsufficientFundsError);

    // Every call that reached the server is a settled LLM charge, and nothing else reached it.
    const charges = await ledgerCharges(ledger, cust);
    const llm = charges.filter((c) => c.chargeType === 'tokens:gpt-4o');
    expect(openai.callCount()).toBe(ok);
    expect(llm).toHaveLength(ok);
    // The ledger total is exactly the sum of priced usage.
    const pricedTokens = sum(openai.calls.map((c) => priceTokens(card, 'gpt-4o', c.response!.usage!.prompt_tokens, c.response!.usage!.completion_tokens).amount));
    expect(sum(llm.map((c) => c.amount))).toBe(pricedTokens);
    const fees = charges.filter((c) => c.chargeType === 'PrivateFlowRun');
    // Refused runs pay no fee and no compute time.
    expect(fees).toHaveLength(ok);
    const compute = charges.filter((c) => c.chargeType === 'compute');
    expect(sum(compute.map((c) => c.amount))).toBe(sum(compute.map((c) => priceComputeMs(card, BigInt(c.quantity!)).amount)));
    const priced = pricedTokens + BigInt(fees.length) * priceChargeType(card, 'PrivateFlowRun', 1).amount + sum(compute.map((c) => c.amount));
    expect(charges.every((c) => c.shortfall === 0n)).toBe(true);
    const b = await ledger.balance(cust);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('0.5') - priced);
    expect(b.balance >= 0n).toBe(true);
    expect(sum(h.runs.map((r) => r.cost))).toBe(priced);
    expect(h.inFlight).toEqual({ roots: 0, steps: 0 });
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
  });
});

describe('usage extraction (pure)', () => {
  it('prefers usage_metadata, then tokenUsage, then estimatedTokenUsage, then the estimate', () => {
    const msg = (u?: object) => ({ text: 'a b', message: { content: 'a b', ...(u ? { usage_metadata: u } : {}) } });
    expect(usageOf({ generations: [[msg({ input_tokens: 3, output_tokens: 4 })]], llmOutput: { tokenUsage: { promptTokens: 9, completionTokens: 9 } } }, 1)).toEqual({ inputTokens: 3, outputTokens: 4, source: 'usage_metadata' });
    expect(usageOf({ generations: [[msg()]], llmOutput: { tokenUsage: { promptTokens: 5, completionTokens: 6 } } }, 1)).toEqual({ inputTokens: 5, outputTokens: 6, source: 'tokenUsage' });
    expect(usageOf({ generations: [[msg()]], llmOutput: { estimatedTokenUsage: { promptTokens: 5, completionTokens: 3 } } }, 1)).toEqual({ inputTokens: 5, outputTokens: 3, source: 'estimatedTokenUsage' });
    // LangChain's estimate, each side raised to ours when that is larger ('a b' is 2 tokens by our rule; the prompt estimate is 11).
    expect(usageOf({ generations: [[msg()]], llmOutput: { estimatedTokenUsage: { promptTokens: 5, completionTokens: 1 } } }, 11)).toEqual({ inputTokens: 11, outputTokens: 2, source: 'estimatedTokenUsage' });
    expect(usageOf({ generations: [[msg()]] }, 11)).toEqual({ inputTokens: 11, outputTokens: 2, source: 'estimate' });
  });
  it('estimate: max(words, ceil(chars/4)) plus 4 per message', () => {
    expect(estimateTextTokens('a b c d e')).toBe(5);
    expect(estimateTextTokens('internationalization')).toBe(5);
    expect(estimatePromptTokens([{ content: 'a b c' }, 'xyz'])).toBe(4 + 3 + 4 + 1);
  });
});

describe.each(BACKENDS)('BillingCallbackHandler with the real QuotaService as its gate on $name', (backend) => {
  it('sessions are admitted per conversation; a refused new session never reaches the model; an upgrade lifts it', async () => {
    const { QuotaService } = await import('../src/quota/service');
    const ledger = await backend.open(await backend.freshTarget());
    const quota = new QuotaService(ledger);
    await ledger.createCustomer({ id: 'gated' });
    await ledger.topUp({ customerId: 'gated', amount: usd('5'), idempotencyKey: 'seed' });
    await quota.updatePlan('free', { sessionsIncluded: 2 });
    const model = new FakeUsageChatModel({ model: 'gpt-4o-mini' });
    let modelCalls = 0;
    const flow = RunnableLambda.from(async (q: string, config) => {
      modelCalls++;
      return String((await model.invoke([new HumanMessage(q)], config)).content);
    });
    const ask = (conversationId: string) =>
      // The free plan has no managed models: its customers call with their own key (BYOK, enforced by the handler).
      flow.invoke('hello there', billingRunConfig(new BillingCallbackHandler({ ledger, customerId: 'gated', conversationId, gate: quota, usesCustomerKey: true, onError: () => undefined })));

    await ask('chat-a');
    await ask('chat-a');
    await ask('chat-b');
    expect((await quota.usage('gated')).sessionsUsed).toBe(2);
    const calls = modelCalls;
    const before = await ledger.balance('gated');
    await expect(ask('chat-c')).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect(modelCalls).toBe(calls);
    expect(await ledger.balance('gated')).toEqual(before);
    // A session in progress may finish.
    await ask('chat-b');
    await quota.subscribe({ customerId: 'gated', planId: 'starter' });
    await ask('chat-c');
    expect((await quota.usage('gated')).sessionsUsed).toBe(3);
    expect((await ledger.checkInvariants()).ok).toBe(true);
    await ledger.close();
  });
});
