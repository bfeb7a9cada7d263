import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { HumanMessage } from '@langchain/core/messages';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { RunnableLambda } from '@langchain/core/runnables';
import { BillingCallbackHandler } from '../src/metering/handler';
import { billingRunConfig } from '../src/metering/run-config';
import { estimatePromptTokens } from '../src/metering/estimate';
import { type BillingError, ByokRequiredError, InsufficientFundsError } from '../src/errors';
import { parseUsd } from '../src/money';
import { priceChargeType, priceTokens } from '../src/pricing/price';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import type { Charge } from '../src/ledger/types';
import { BACKENDS } from './support/backends';
import { installOfflineTiktoken, startOpenAIServer, type ChatRequest, type OpenAIServer } from './support/openai-server';

/**
 * Run reservations under real concurrency: real LangChain runs against the
 * loopback OpenAI-compatible server, provider calls counted at that server.
 * The server reports usage equal to what the handler holds (prompt estimate +
 * max_tokens), so a run costs exactly its reservation and "the balance pays for
 * K complete runs" has one meaning.
 */
let openai: OpenAIServer;
let uninstallTiktoken: () => void;
const MAX_TOKENS = 200;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer({ delayMs: 40 });
  openai.setScript((req: ChatRequest) => ({ content: 'ok', usage: { prompt_tokens: estimatePromptTokens(req.messages ?? []), completion_tokens: MAX_TOKENS } }));
});
afterAll(async () => {
  uninstallTiktoken?.();
  await openai?.close();
});
beforeEach(() => openai.reset());

const usd = parseUsd;
const sum = (xs: bigint[]) => xs.reduce((a, b) => a + b, 0n);
const model = () => new ChatOpenAI({ model: 'gpt-4o', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: MAX_TOKENS });

async function charges(ledger: SqlLedger, customerId: string): Promise<Charge[]> {
  const entries = await ledger.statement(customerId);
  return Promise.all(entries.filter((e) => e.chargeId && (e.type === 'settle' || e.type === 'charge')).map((e) => ledger.getCharge(e.chargeId!)));
}

describe.each(BACKENDS)('run reservations on $name', (backend) => {
  let ledger: SqlLedger;
  beforeAll(async () => {
    ledger = await backend.open(await backend.freshTarget());
  });
  afterAll(async () => ledger?.close());

  async function customer(amount: bigint): Promise<string> {
    const id = `r-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount, idempotencyKey: `top-${id}` });
    return id;
  }

  it('partial capture (settle final:false) keeps the hold pending with the rest; more than it has comes from available', async () => {
    const c = await customer(usd('1'));
    const h = await ledger.hold({ customerId: c, amount: usd('0.3'), idempotencyKey: `${c}-h` });
    const first = await ledger.settle({ holdId: h.id, amount: usd('0.1'), idempotencyKey: `${c}-s1`, final: false, chargeType: 'Inference' });
    expect(first.amount).toBe(usd('0.1'));
    expect(await ledger.getHold(h.id)).toMatchObject({ status: 'pending', amount: usd('0.2') });
    expect(await ledger.balance(c)).toMatchObject({ balance: usd('0.9'), held: usd('0.2'), available: usd('0.7') });
    // Replayed: same charge, nothing moves.
    expect((await ledger.settle({ holdId: h.id, amount: usd('0.1'), idempotencyKey: `${c}-s1`, final: false, chargeType: 'Inference' })).id).toBe(first.id);
    // Above what is left: 0.2 from the hold, 0.05 from available.
    await ledger.settle({ holdId: h.id, amount: usd('0.25'), idempotencyKey: `${c}-s2`, final: false });
    expect(await ledger.getHold(h.id)).toMatchObject({ status: 'pending', amount: 0n });
    expect(await ledger.balance(c)).toMatchObject({ balance: usd('0.65'), held: 0n });
    await ledger.release({ holdId: h.id, idempotencyKey: `${c}-r` });
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('incremental hold (hold addTo) grows a pending hold atomically; refused or misdirected, nothing changes', async () => {
    const c = await customer(usd('1'));
    const other = await customer(usd('1'));
    const h = await ledger.hold({ customerId: c, amount: usd('0.4'), idempotencyKey: `${c}-h` });
    const grown = await ledger.hold({ customerId: c, amount: usd('0.3'), idempotencyKey: `${c}-g1`, addTo: h.id, chargeType: 'tokens:gpt-4o' });
    expect(grown).toMatchObject({ id: h.id, amount: usd('0.7'), status: 'pending', availableAfter: usd('0.3') });
    // Replayed: same result, nothing moves.
    expect((await ledger.hold({ customerId: c, amount: usd('0.3'), idempotencyKey: `${c}-g1`, addTo: h.id, chargeType: 'tokens:gpt-4o' })).amount).toBe(usd('0.7'));
    expect(await ledger.balance(c)).toMatchObject({ held: usd('0.7'), available: usd('0.3') });
    await expect(ledger.hold({ customerId: c, amount: usd('0.31'), idempotencyKey: `${c}-g2`, addTo: h.id })).rejects.toMatchObject({ code: 'INSUFFICIENT_FUNDS' });
    await expect(ledger.hold({ customerId: other, amount: usd('0.1'), idempotencyKey: `${c}-g3`, addTo: h.id })).rejects.toMatchObject({ code: 'VALIDATION_ERROR' });
    expect((await ledger.getHold(h.id)).amount).toBe(usd('0.7'));
    expect(await ledger.balance(other)).toMatchObject({ held: 0n });
    const ch = await ledger.settle({ holdId: h.id, amount: usd('0.5'), idempotencyKey: `${c}-s` });
    expect(ch.amount).toBe(usd('0.5'));
    await expect(ledger.hold({ customerId: c, amount: usd('0.1'), idempotencyKey: `${c}-g4`, addTo: h.id })).rejects.toMatchObject({ code: 'HOLD_NOT_PENDING' });
    expect(await ledger.balance(c)).toMatchObject({ balance: usd('0.5'), held: 0n });
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('bring your own key in the library: a plan without managed models is refused before the provider on the operator’s key', async () => {
    const { QuotaService } = await import('../src/quota/service');
    const quota = new QuotaService(ledger);
    const c = await customer(usd('1'));
    await quota.subscribe({ customerId: c, planId: 'free' });
    const chain = ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(model());
    const refused = await chain.invoke({ q: 'hello' }, billingRunConfig(new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'byok', gate: quota }))).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ByokRequiredError);
    expect(openai.callCount()).toBe(0);
    expect((await ledger.statement(c)).map((e) => e.type)).toEqual(['topup']);
    await chain.invoke({ q: 'hello' }, billingRunConfig(new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'byok', gate: quota, usesCustomerKey: true })));
    expect(openai.callCount()).toBe(1);
  });

  it('20 concurrent one-call runs on a balance that pays for 14: exactly 14 complete, 6 are refused and pay nothing', async () => {
    const card = await ledger.activeRateCard();
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    const prompt = ChatPromptTemplate.fromMessages([['human', 'question number {i} please']]);
    const call = priceTokens(card, 'gpt-4o', estimatePromptTokens([{ content: 'question number 10 please' }]), MAX_TOKENS).amount;
    const run = fee + call;
    const c = await customer(14n * run + run / 2n);
    const h = new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'burst', computeTime: false, onError: () => undefined });
    const chain = prompt.pipe(model());
    const results = await Promise.allSettled(Array.from({ length: 20 }, (_, k) => chain.invoke({ i: 10 + k }, billingRunConfig(h))));

    const done = results.filter((r) => r.status === 'fulfilled');
    const refused = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(done).toHaveLength(14);
    for (const r of refused) expect(r.reason).toBeInstanceOf(InsufficientFundsError);
    expect(openai.callCount()).toBe(14);
    const all = await charges(ledger, c);
    expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(14);
    expect(all.filter((x) => x.chargeType === 'PrivateFlowRun')).toHaveLength(14);
    expect(all.every((x) => x.shortfall === 0n)).toBe(true);
    const b = await ledger.balance(c);
    expect(b).toMatchObject({ held: 0n, balance: run / 2n });
    expect(h.runs.filter((r) => r.refused).every((r) => r.cost === 0n)).toBe(true);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a job re-run under the same run key (after the first attempt ended): the fee is paid once, every provider call is paid', async () => {
    const card = await ledger.activeRateCard();
    const c = await customer(usd('1'));
    const chain = ChatPromptTemplate.fromMessages([['human', 'same job {i}']]).pipe(model());
    const handlers: BillingCallbackHandler[] = [];
    const attempt = () => {
      const h = new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'job', runKey: `queue:job-${c}`, computeTime: false, onError: () => undefined });
      handlers.push(h);
      return chain.invoke({ i: 1 }, billingRunConfig(h));
    };
    await attempt();
    // The ledger hands the same reservation back to the re-run; old enough to be recognised as a replay.
    await new Promise((r) => setTimeout(r, 2100));
    await attempt();
    expect(openai.callCount()).toBe(2);
    expect(handlers.flatMap((h) => h.failures)).toEqual([]);
    const all = await charges(ledger, c);
    expect(all.filter((x) => x.chargeType === 'PrivateFlowRun').map((x) => x.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(2);
    const b = await ledger.balance(c);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('1') - sum(all.map((x) => x.amount)));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('a job retried at once under the same run key (or one handler with a runKey reused): every call that reached the server is paid; a third run under the key, or a second at once, is refused before it', async () => {
    const card = await ledger.activeRateCard();
    const c = await customer(usd('1'));
    const chain = ChatPromptTemplate.fromMessages([['human', 'same job {i}']]).pipe(model());
    const h = new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'job', runKey: `queue:job-${c}`, computeTime: false, onError: () => undefined });
    // No pause: the reservation handed back is seconds younger than the replay age the ledger's answer was judged by.
    await chain.invoke({ i: 1 }, billingRunConfig(h));
    await chain.invoke({ i: 2 }, billingRunConfig(h));
    const third = await chain.invoke({ i: 3 }, billingRunConfig(h)).catch((e: unknown) => e);
    expect(third).toMatchObject({ code: 'HOLD_NOT_PENDING' });
    expect(openai.callCount()).toBe(2);
    expect(h.failures).toEqual([]);
    const all = await charges(ledger, c);
    expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(2);
    expect(all.filter((x) => x.chargeType === 'PrivateFlowRun').map((x) => x.amount)).toEqual([priceChargeType(card, 'PrivateFlowRun', 1).amount]);
    const b = await ledger.balance(c);
    expect(b.held).toBe(0n);
    expect(b.balance).toBe(usd('1') - sum(all.map((x) => x.amount)));

    // Two runs at once on one handler with a runKey: the second is refused, the first is billed as usual.
    openai.reset();
    const c2 = await customer(usd('1'));
    const h2 = new BillingCallbackHandler({ ledger, customerId: c2, conversationId: 'job', runKey: `queue:job-${c2}`, computeTime: false, onError: () => undefined });
    const both = await Promise.allSettled([1, 2].map((i) => chain.invoke({ i }, billingRunConfig(h2))));
    expect(both.filter((r) => r.status === 'rejected').map((r) => ((r as PromiseRejectedResult).reason as BillingError).code)).toEqual(['VALIDATION_ERROR']);
    expect(openai.callCount()).toBe(1);
    const all2 = await charges(ledger, c2);
    expect(all2.map((x) => x.chargeType).sort()).toEqual(['PrivateFlowRun', 'tokens:gpt-4o']);
    expect((await ledger.balance(c2)).held).toBe(0n);
    expect(h2.failures).toEqual([]);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('multi-call runs without a run budget (usage below the maximum, as usual): at least 90 % of what the balance pays for complete', async () => {
    openai.setScript(null); // the server's own echo and usage: far below max_tokens
    try {
      const CALLS = 3;
      const llm = model();
      const agent = RunnableLambda.from(async (_: string, config) => {
        for (let t = 0; t < CALLS; t++) await llm.invoke([new HumanMessage(`turn ${t} of a run`)], config);
        return 'done';
      });
      // What one complete run costs, measured alone.
      const solo = await customer(usd('1'));
      await agent.invoke('go', billingRunConfig(new BillingCallbackHandler({ ledger, customerId: solo, conversationId: 'solo', computeTime: false })));
      const runCost = usd('1') - (await ledger.balance(solo)).balance;
      const K = 12;
      const c = await customer(BigInt(K) * runCost + runCost / 2n);
      openai.reset();
      const h = new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'multi', computeTime: false, onError: () => undefined });
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => agent.invoke('go', billingRunConfig(h))));
      const done = results.filter((r) => r.status === 'fulfilled').length;
      for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(InsufficientFundsError);
      expect(done).toBeGreaterThanOrEqual(Math.ceil(0.9 * K));
      expect(done).toBeLessThanOrEqual(K);
      const all = await charges(ledger, c);
      expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(openai.callCount());
      expect(all.every((x) => x.shortfall === 0n)).toBe(true);
      const b = await ledger.balance(c);
      expect(b.held).toBe(0n);
      expect(b.balance >= 0n).toBe(true);
      expect((await ledger.checkInvariants()).ok).toBe(true);
    } finally {
      openai.setScript((req: ChatRequest) => ({ content: 'ok', usage: { prompt_tokens: estimatePromptTokens(req.messages ?? []), completion_tokens: MAX_TOKENS } }));
    }
  });

  it('worst case, no run budget and every call costing its maximum: the deadlock breaker lets all but one of what the balance pays for finish', async () => {
    const card = await ledger.activeRateCard();
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    const CALLS = 3;
    const llm = model();
    const q = (turn: number) => [new HumanMessage(`turn ${turn} of a run`)];
    const steps = sum(Array.from({ length: CALLS }, (_, t) => priceTokens(card, 'gpt-4o', estimatePromptTokens(q(t)), MAX_TOKENS).amount));
    const K = 9;
    const c = await customer(BigInt(K) * (fee + steps) + steps / 3n);
    // Admission reserves only fee + the first call, so the burst admits more runs than can finish; when every
    // admitted run waits for money, the most recently admitted one is refused and returns its reservation.
    const h = new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'worst', computeTime: false, onError: () => undefined });
    const agent = RunnableLambda.from(async (_: string, config) => {
      for (let t = 0; t < CALLS; t++) await llm.invoke(q(t), config);
      return 'done';
    });
    const started = Date.now();
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => agent.invoke('go', billingRunConfig(h))));
    expect(Date.now() - started).toBeLessThan(20_000); // nobody sat out the 30 s wait: deadlocks were broken
    const done = results.filter((r) => r.status === 'fulfilled').length;
    for (const r of results) if (r.status === 'rejected') expect(r.reason).toBeInstanceOf(InsufficientFundsError);
    expect(done).toBeGreaterThanOrEqual(K - 1);
    const all = await charges(ledger, c);
    expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(openai.callCount());
    expect(all.filter((x) => x.chargeType === 'PrivateFlowRun')).toHaveLength(done);
    expect(all.every((x) => x.shortfall === 0n)).toBe(true);
    const b = await ledger.balance(c);
    expect(b.held).toBe(0n);
    expect(b.balance >= 0n).toBe(true);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });

  it('multi-call runs with a run budget: every admitted run finishes, at least 90 % of what the balance pays for; every call paid', async () => {
    const card = await ledger.activeRateCard();
    const fee = priceChargeType(card, 'PrivateFlowRun', 1).amount;
    const CALLS = 3;
    const llm = model();
    const q = (turn: number) => [new HumanMessage(`turn ${turn} of a run`)];
    const callCost = (turn: number) => priceTokens(card, 'gpt-4o', estimatePromptTokens(q(turn)), MAX_TOKENS).amount;
    const steps = sum(Array.from({ length: CALLS }, (_, t) => callCost(t)));
    const K = 9;
    const c = await customer(BigInt(K) * (fee + steps) + steps / 3n);
    const h = new BillingCallbackHandler({ ledger, customerId: c, conversationId: 'multi', computeTime: false, runBudgetUsd: formatBudget(steps), onError: () => undefined });
    const agent = RunnableLambda.from(async (_: string, config) => {
      for (let t = 0; t < CALLS; t++) await llm.invoke(q(t), config);
      return 'done';
    });
    const results = await Promise.allSettled(Array.from({ length: 20 }, () => agent.invoke('go', billingRunConfig(h))));
    const done = results.filter((r) => r.status === 'fulfilled').length;
    expect(done).toBeGreaterThanOrEqual(Math.ceil(0.9 * K));
    // Refusals happen at admission only: no run paid for calls and then stopped.
    expect(openai.callCount()).toBe(done * CALLS);
    const all = await charges(ledger, c);
    expect(all.filter((x) => x.chargeType === 'tokens:gpt-4o')).toHaveLength(openai.callCount());
    expect(all.every((x) => x.shortfall === 0n)).toBe(true);
    const b = await ledger.balance(c);
    expect(b.held).toBe(0n);
    expect(b.balance >= 0n).toBe(true);
    expect((await ledger.checkInvariants()).ok).toBe(true);
  });
});

function formatBudget(n: bigint): string {
  return `${n / 1_000_000_000n}.${(n % 1_000_000_000n).toString().padStart(9, '0')}`;
}
