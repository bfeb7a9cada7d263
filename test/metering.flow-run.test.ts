import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { FlowRun, openFlowRun, type OpenFlowRunInput } from '../src/plugin/flow-run';
import { flowRunKey } from '../src/plugin/run-key';
import { DEFAULT_REFUSAL_MESSAGES, refusalMarkerOf, renderRefusal, type Refusal } from '../src/plugin/refusal';
import { closeSharedLedgers, sharedLedger } from '../src/plugin/ledgers';
import { estimatePromptTokens } from '../src/metering/estimate';
import { shutdownLangfuseReporters } from '../src/langfuse/reporter';
import { BILLING_METADATA_KEYS as K } from '../src/langfuse/metadata';
import { formatUsd, parseUsd } from '../src/money';
import { priceChargeType, priceTokens } from '../src/pricing/price';
import type { Charge, Ledger } from '../src/ledger/types';
import { BACKENDS } from './support/backends';
import { installOfflineTiktoken, startOpenAIServer, type ChatRequest, type OpenAIServer } from './support/openai-server';
import { startLangfuseServer, type LangfuseServer } from './support/langfuse-server';

/**
 * FlowRun, the API the Flowise nodes call around every provider call, driven
 * exactly as the metered model drives it (before → provider → after/fail)
 * with real ChatOpenAI calls to the loopback server; calls counted there.
 */
let openai: OpenAIServer;
let langfuse: LangfuseServer;
let uninstallTiktoken: () => void;
const MAX = 200;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer({ delayMs: 40 });
  langfuse = await startLangfuseServer();
});
afterAll(async () => {
  await shutdownLangfuseReporters(500);
  await closeSharedLedgers();
  uninstallTiktoken?.();
  await openai?.close();
  await langfuse?.close();
});
beforeEach(() => {
  openai.reset();
  // Usage as held (prompt estimate + max tokens): a run costs exactly its reservation.
  openai.setScript((req: ChatRequest) => ({ content: 'the answer', usage: { prompt_tokens: estimatePromptTokens(req.messages ?? []), completion_tokens: MAX } }));
  langfuse.reset();
});

const usd = parseUsd;
const sum = (xs: bigint[]) => xs.reduce((a, b) => a + b, 0n);
const llm = (model = 'gpt-4o') => new ChatOpenAI({ model, apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: MAX });

/** One metered call, as nodes/shared/metered-model.ts makes it. */
async function call(run: FlowRun, question: string, opts: { usesCustomerKey?: boolean; model?: string; callKey?: string } = {}): Promise<{ text: string } | { refusal: Refusal }> {
  const model = opts.model ?? 'gpt-4o';
  const runId = randomUUID();
  const b = await run.beforeModelCall({ callKey: opts.callKey ?? `node_0:${runId}`, model, messages: [{ content: question }], maxOutputTokens: MAX, usesCustomerKey: opts.usesCustomerKey, observationId: runId });
  if (!b.ok) return { refusal: b.refusal };
  try {
    const res = await llm(model).invoke([new HumanMessage(question)]);
    await run.afterModelCall(b.ticket, { usage: { inputTokens: res.usage_metadata!.input_tokens, outputTokens: res.usage_metadata!.output_tokens } });
    return { text: String(res.content) };
  } catch (e) {
    await run.failModelCall(b.ticket, {});
    throw e;
  }
}

async function chargesOf(ledger: Ledger, customerId: string): Promise<Charge[]> {
  const entries = await ledger.statement(customerId);
  return Promise.all(entries.filter((e) => e.chargeId && (e.type === 'settle' || e.type === 'charge')).map((e) => ledger.getCharge(e.chargeId!)));
}

describe.each(BACKENDS)('FlowRun (the nodes’ billing API) on $name', (backend) => {
  let target: string;
  let ledger: Ledger;
  beforeAll(async () => {
    target = await backend.freshTarget();
    ledger = (await sharedLedger(target)).ledger;
  });

  async function customer(amount: bigint): Promise<string> {
    const id = `f-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount, idempotencyKey: `top-${id}` });
    return id;
  }
  const base = (customerId: string, extra: Partial<OpenFlowRunInput> = {}): OpenFlowRunInput => ({
    ledgerDatabase: target, customerId, conversationId: `chat-${randomUUID().slice(0, 6)}`, runKey: `flow:test:${randomUUID()}`,
    actor: 'node:test', runFee: { item: 'PrivateFlowRun', quantity: '1' }, checkSessions: false, ...extra,
  });

  it('burst: 20 concurrent predictions on a balance that pays for 14 → exactly 14 answers, 6 refusal answers that paid nothing', async () => {
    const card = await ledger.activeRateCard();
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    const perRun = fee + priceTokens(card, 'gpt-4o', estimatePromptTokens([{ content: 'question 10 please' }]), MAX).amount;
    const c = await customer(14n * perRun + perRun / 3n);
    const messages = { insufficientFunds: 'Out of credit. Please top up.' };
    const results = await Promise.all(
      Array.from({ length: 20 }, async (_, k) => {
        const run = await openFlowRun(base(c, { messages }));
        try {
          return await call(run, `question ${10 + k} please`);
        } finally {
          await run.close();
        }
      }),
    );
    const answers = results.filter((r) => 'text' in r);
    const refusals = results.filter((r): r is { refusal: Refusal } => 'refusal' in r);
    expect(answers).toHaveLength(14);
    expect(refusals).toHaveLength(6);
    for (const r of refusals) {
      expect(r.refusal).toMatchObject({ kind: 'insufficientFunds', code: 'INSUFFICIENT_FUNDS', message: 'Out of credit. Please top up.' });
      expect(refusalMarkerOf({ billing_refusal: r.refusal.marker })).toEqual({ type: 'billing_refusal', kind: 'insufficientFunds', code: 'INSUFFICIENT_FUNDS' });
    }
    expect(openai.callCount()).toBe(14);
    const charges = await chargesOf(ledger, c);
    expect(charges.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(14);
    expect(charges.filter((x) => x.chargeType === 'PrivateFlowRun')).toHaveLength(14);
    expect(await ledger.balance(c)).toMatchObject({ held: 0n, balance: perRun / 3n });
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('the pricier first call: no fee is charged when it cannot be held; the answer is the operator’s message, with placeholders only as asked', async () => {
    const c = await customer(usd('0.03'));
    const run = await openFlowRun(base(c, { maxOutputTokensCap: 4096, messages: { insufficientFunds: 'Need ${requiredUsd}, you have ${availableUsd}.' } }));
    const b = await run.beforeModelCall({ callKey: 'n:1', model: 'gpt-4o', messages: [{ content: 'hello' }] });
    expect(b.ok).toBe(false);
    const r = (b as { refusal: Refusal }).refusal;
    expect(r.kind).toBe('insufficientFunds');
    // Required = the run fee + the call's maximum, reserved together.
    const card = await ledger.activeRateCard();
    const required = priceChargeType(card, 'PrivateFlowRun', 1).amount + priceTokens(card, 'gpt-4o', estimatePromptTokens([{ content: 'hello' }]), 4096).amount;
    expect(r.message).toBe(`Need $${formatUsd(required)}, you have $0.03.`);
    expect(r.message).not.toContain(c);
    // Sticky: the next call of the prediction is refused without the ledger.
    const again = await run.beforeModelCall({ callKey: 'n:2', model: 'gpt-4o-mini', messages: [{ content: 'x' }], maxOutputTokens: 5 });
    expect(again).toMatchObject({ ok: false, refusal: { kind: 'insufficientFunds' } });
    await run.close();
    expect(openai.callCount()).toBe(0);
    expect((await ledger.statement(c)).map((e) => e.type)).toEqual(['topup']);
    // The default message names no customer and no amount.
    const d = await openFlowRun(base(c, { maxOutputTokensCap: 4096 }));
    const dr = await d.beforeModelCall({ callKey: 'n:1', model: 'gpt-4o', messages: [{ content: 'hello' }] });
    expect(dr).toMatchObject({ ok: false, refusal: { message: DEFAULT_REFUSAL_MESSAGES.insufficientFunds } });
    await d.close();
  });

  it('a retried job (same run key, another worker) pays the fee once; every provider call is paid', async () => {
    const card = await ledger.activeRateCard();
    const c = await customer(usd('1'));
    const runKey = flowRunKey({ chatflowId: 'cf', chatId: 'chat-1', question: 'retry me', historyLength: 2, queueMode: true, apiMessageId: randomUUID() });
    expect(flowRunKey({ chatflowId: 'cf', chatId: 'chat-1', question: 'retry me', historyLength: 2, queueMode: true, apiMessageId: randomUUID() })).toBe(runKey);
    // Worker 1 answers a call, then dies before the run ends (its reservation stays pending).
    const w1 = new FlowRun(base(c, { runKey }), () => undefined);
    expect('text' in (await call(w1, 'retry me'))).toBe(true);
    // Worker 2 re-runs the whole job under the same key.
    const w2 = new FlowRun(base(c, { runKey }), () => undefined);
    expect('text' in (await call(w2, 'retry me'))).toBe(true);
    await w2.end();
    const charges = await chargesOf(ledger, c);
    expect(charges.filter((x) => x.chargeType === 'PrivateFlowRun').map((x) => x.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    expect(charges.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(openai.callCount());
    expect(openai.callCount()).toBe(2);
    const b = await ledger.balance(c);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('1') - sum(charges.map((x) => x.amount)));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('concurrent calls of one prediction share one reservation and one fee; a call that does not fit grows it', async () => {
    const card = await ledger.activeRateCard();
    const c = await customer(usd('1'));
    const run = await openFlowRun(base(c));
    const again = await openFlowRun({ ...base(c), runKey: (run as unknown as { i: OpenFlowRunInput }).i.runKey });
    expect(again).toBe(run);
    const answers = await Promise.all(['a b', 'c d', 'e f'].map((q) => call(run, q)));
    expect(answers.every((a) => 'text' in a)).toBe(true);
    await run.close();
    const entries = await ledger.statement(c);
    expect(entries.filter((e) => e.type === 'hold' && e.chargeType === 'run-reservation' && e.memo === null)).toHaveLength(1);
    expect(entries.filter((e) => e.type === 'hold' && e.memo === 'added to the hold')).toHaveLength(2);
    const charges = await chargesOf(ledger, c);
    expect(charges.filter((x) => x.chargeType === 'PrivateFlowRun').map((x) => x.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    expect(charges.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(3);
    expect(await ledger.balance(c)).toMatchObject({ held: 0n, balance: usd('1') - sum(charges.map((x) => x.amount)) });
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a pause longer than idleMs returns the reservation; the next call of the prediction still runs, without a second fee', async () => {
    const card = await ledger.activeRateCard();
    const c = await customer(usd('1'));
    const run = await openFlowRun(base(c, { idleMs: 30 }));
    expect('text' in (await call(run, 'before the pause'))).toBe(true);
    await new Promise((r) => setTimeout(r, 150));
    expect((await ledger.balance(c)).held).toBe(0n);
    expect('text' in (await call(run, 'after the pause'))).toBe(true);
    await run.close();
    const charges = await chargesOf(ledger, c);
    expect(charges.filter((x) => x.chargeType === 'PrivateFlowRun').map((x) => x.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    expect(charges.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(2);
    expect(await ledger.balance(c)).toMatchObject({ held: 0n, balance: usd('1') - sum(charges.map((x) => x.amount)) });
  });

  it('bring your own key: a plan without managed models is refused on the operator’s key and runs on the customer’s', async () => {
    const c = await customer(usd('1'));
    const { quota } = await sharedLedger(target);
    await quota.subscribe({ customerId: c, planId: 'free' });
    const refused = await openFlowRun(base(c, { checkSessions: true }));
    const r = await call(refused, 'use the operator key');
    expect(r).toMatchObject({ refusal: { kind: 'byokRequired', code: 'BYOK_REQUIRED', message: DEFAULT_REFUSAL_MESSAGES.byokRequired } });
    await refused.close();
    expect(openai.callCount()).toBe(0);
    expect((await ledger.statement(c)).map((e) => e.type)).toEqual(['topup']);
    const own = await openFlowRun(base(c, { checkSessions: true }));
    expect('text' in (await call(own, 'use my key', { usesCustomerKey: true }))).toBe(true);
    await own.close();
    expect(openai.callCount()).toBe(1);
  });

  it('Langfuse: every charge of the run is a cost on its trace (sum = ledger), and the trace carries the billing metadata', async () => {
    const c = await customer(usd('1'));
    const traceId = randomUUID();
    const lf = { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushIntervalMs: 50 };
    const seen: string[] = [];
    const run = await openFlowRun(base(c, { traceId, langfuse: lf, conversationId: 'conv-lf', onCharge: (x) => seen.push(x.costUsd) }));
    await call(run, 'first question');
    await call(run, 'second question');
    const tool = await run.charge({ callKey: 'tool_0:1', item: 'Inference', quantity: '1' });
    expect(tool.ok).toBe(true);
    await run.close();
    const charges = await chargesOf(ledger, c);
    expect(charges.map((x) => x.chargeType).sort()).toEqual(['Inference', 'PrivateFlowRun', 'tokens:gpt-4o', 'tokens:gpt-4o']);
    const ledgerTotal = sum(charges.map((x) => x.amount));
    expect(seen).toHaveLength(4);
    const view = await langfuse.waitFor(() => {
      const v = langfuse.traces().get(traceId);
      return v && v.observations.filter((o) => o.costDetails?.total !== undefined).length === 4 ? v : undefined;
    });
    const costs = view.observations.map((o) => BigInt(Math.round((o.costDetails?.total ?? 0) * 1e9)));
    expect(sum(costs)).toBe(ledgerTotal);
    expect(view.trace.metadata).toMatchObject({ [K.customerId]: c, [K.conversationId]: 'conv-lf', [K.rateCardVersion]: (await ledger.activeRateCard()).version });
  });

  it('Langfuse without a trace id (chatflows): each call’s generation carries its cost, the first also the fee (sum = ledger)', async () => {
    const c = await customer(usd('1'));
    const lf = { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushIntervalMs: 50 };
    const run = await openFlowRun(base(c, { langfuse: lf }));
    const ids: string[] = [];
    for (const q of ['one', 'two']) {
      const runId = randomUUID();
      ids.push(runId);
      const b = await run.beforeModelCall({ callKey: `n:${runId}`, model: 'gpt-4o', messages: [{ content: q }], maxOutputTokens: MAX, observationId: runId });
      expect(b.ok).toBe(true);
      if (b.ok) await run.afterModelCall(b.ticket, { usage: { inputTokens: 10, outputTokens: 20 } });
    }
    await run.close();
    const charges = await chargesOf(ledger, c);
    const card = await ledger.activeRateCard();
    const call = priceTokens(card, 'gpt-4o', 10, 20).amount;
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    expect(sum(charges.map((x) => x.amount))).toBe(2n * call + fee);
    const costs = await langfuse.waitFor(() => {
      const obs = ids.map((id) => langfuse.observations().get(id)?.costDetails?.total);
      return obs.every((v) => v !== undefined) ? obs.map((v) => BigInt(Math.round(v! * 1e9))) : undefined;
    });
    expect(costs).toEqual([call + fee, call]);
  });

  it('precheck (guard nodes): refuses early on funds or quota without reserving or charging anything', async () => {
    const poor = await customer(usd('0.005'));
    const r1 = await openFlowRun(base(poor));
    expect(await r1.precheck('0.01')).toMatchObject({ kind: 'insufficientFunds' });
    await r1.close();
    const rich = await customer(usd('1'));
    const r2 = await openFlowRun(base(rich));
    expect(await r2.precheck('0.01')).toBeNull();
    await r2.close();
    for (const c of [poor, rich]) expect((await ledger.statement(c)).map((e) => e.type)).toEqual(['topup']);
  });

  it('renders only known placeholders', () => {
    expect(renderRefusal('{plan} plan: {availableUsd} left {unknown}', { plan: 'free', availableUsd: '0.01' })).toBe('free plan: 0.01 left {unknown}');
  });
});
