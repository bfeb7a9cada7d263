/**
 * The metered variants end to end, registered inside flowise.e2e.test.ts so
 * they share its one Flowise start: every provider call paid before it
 * happens on both canvases, refusals answered with HTTP 200, bursts, bring your
 * own key, Langfuse costs equal to the ledger, and the variant in the real UI.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import { signBillingToken } from '../../src/identity';
import type { SqlLedger } from '../../src/ledger/sql-ledger';
import { formatUsd, type Nanos, parseUsd } from '../../src/money';
import { priceChargeType, priceTokens } from '../../src/pricing/price';
import type { RateCard } from '../../src/pricing/ratecard';
import type { QuotaService } from '../../src/quota/service';
import { DEFAULT_REFUSAL_MESSAGES, REFUSAL_MARKER_KEY } from '../../src/plugin';
import { BILLING_METADATA_KEYS } from '../../src/langfuse/metadata';
import type { LangfuseServer } from '../support/langfuse-server';
import type { OpenAIServer, RecordedCall } from '../support/openai-server';
import type { AnthropicServer } from '../support/anthropic-server';
// @ts-expect-error plain ESM helper without types
import { anthropicAgentflow, anthropicChatflow, conditionAgentflow, llmAgentflow, meteredChatflow, toolAgentflow } from './metered-flows.mjs';

type FlowIds = { readonly ledger: string; readonly openai: string; readonly anthropic: string };

export interface ScenarioContext {
  readonly e2e: (name: string, fn: () => Promise<void>, timeout?: number, opts?: { retry?: number }) => void;
  readonly step: (msg: string) => void;
  readonly client: () => any;
  readonly model: () => OpenAIServer;
  readonly anthropic: () => AnthropicServer;
  readonly langfuse: () => LangfuseServer;
  readonly ledger: () => SqlLedger;
  readonly quota: () => QuotaService;
  readonly card: () => RateCard;
  readonly ids: () => FlowIds & { langfuse: string };
  readonly secret: string;
  readonly apiConfig: unknown;
  readonly customer: (id: string, usd: string, plan?: string) => Promise<void>;
  readonly browser: (fn: (page: any, shot: (name: string) => Promise<string>) => Promise<void>) => Promise<void>;
}

export function registerMeteredScenarios(c: ScenarioContext): void {
  const fee = () => priceChargeType(c.card(), 'PrivateFlowRun', 1).amount;
  const callPrice = (x: RecordedCall) => priceTokens(c.card(), x.body.model, x.response!.usage!.prompt_tokens, x.response!.usage!.completion_tokens).amount;
  const balance = async (id: string) => (await c.ledger().balance(id)).balance;
  const predict = (flowId: string, customerId: string, question: string, chatId: string, vars: Record<string, string> = {}) =>
    c.client().predict(flowId, { question, chatId, overrideConfig: { vars: { billingToken: signBillingToken(c.secret, customerId), ...vars } } }, { allowError: true }) as Promise<{ status: number; data: any }>;
  const flows: Record<string, string> = {};
  const flow = async (name: string, type: 'AGENTFLOW' | 'CHATFLOW', build: () => Promise<unknown>) => {
    if (flows[name]) return flows[name]!;
    const f = await c.client().createChatflow({ name, flowData: await build(), type });
    await c.client().updateChatflow(f.id, { apiConfig: c.apiConfig });
    return (flows[name] = f.id);
  };
  const llmFlow = () => flow('Metered LLM agentflow', 'AGENTFLOW', () => llmAgentflow(c.client(), c.ids(), c.model().baseURL));
  const agentFlow = () => flow('Metered tool agent agentflow', 'AGENTFLOW', () => toolAgentflow(c.client(), c.ids(), c.model().baseURL));
  const conditionFlow = () => flow('Metered condition agentflow', 'AGENTFLOW', () => conditionAgentflow(c.client(), c.ids(), c.model().baseURL));
  const chatFlow = () => flow('Metered chatflow', 'CHATFLOW', () => meteredChatflow(c.client(), c.ids(), c.model().baseURL));
  /** Each model call that reached the loopback server is paid: the ledger's token charges equal the calls' prices. */
  const tokenCharges = async (customerId: string) =>
    (await c.ledger().statement(customerId)).filter((e) => e.type === 'settle' && e.chargeType !== 'PrivateFlowRun' && e.chargeType !== 'ObjectTransformer').reduce((a, e) => a - e.amount, 0n);
  const markerOf = (data: any) => {
    for (const n of data?.agentFlowExecutedData ?? []) {
      const m = n?.data?.output?.responseMetadata?.[REFUSAL_MARKER_KEY];
      if (m) return m;
    }
    return undefined;
  };

  c.e2e('agentflow LLM node on ChatOpenAI (metered): each prediction pays the run fee and its call’s exact tokens', async () => {
    const id = await llmFlow();
    await c.customer('m-llm', '1');
    const before = await balance('m-llm');
    const n = c.model().calls.length;
    let expected = 0n;
    for (const [k, q] of ['first metered question', 'second metered question'].entries()) {
      const r = await predict(id, 'm-llm', q, `m-llm-${k}`);
      expect(r.status, JSON.stringify(r.data).slice(0, 400)).toBe(200);
      expect(r.data.text).toBe(`echo: ${q}`);
      const calls = c.model().calls.slice(n + k);
      expect(calls).toHaveLength(1);
      expected += fee() + callPrice(calls[0]!);
    }
    expect(formatUsd(before - (await balance('m-llm')))).toBe(formatUsd(expected));
    const fees = (await c.ledger().statement('m-llm')).filter((e) => e.chargeType === 'PrivateFlowRun' && e.type === 'settle');
    expect(fees.map((e) => -e.amount)).toEqual([fee(), fee()]);
    c.step(`metered LLM agentflow: 2 predictions = 2 × fee + tokens = $${formatUsd(expected)}`);
  });

  c.e2e('Anthropic (metered), streaming on, in an agentflow LLM node and a chatflow: each provider call is charged once, its prompt included, with and without SSE', async () => {
    const agentflow = await flow('Metered Anthropic agentflow', 'AGENTFLOW', () => anthropicAgentflow(c.client(), c.ids()));
    const chatflow = await flow('Metered Anthropic chatflow', 'CHATFLOW', () => anthropicChatflow(c.client(), c.ids()));
    await c.customer('m-claude', '1');
    const before = await balance('m-claude');
    const n = c.anthropic().calls.length;
    let expected = 0n;
    const runs = [[agentflow, false], [agentflow, true], [chatflow, false], [chatflow, true]] as const;
    for (const [k, [id, sse]] of runs.entries()) {
      const q = `claude question ${k}`;
      const r = (await c.client().predict(
        id,
        { question: q, chatId: `m-claude-${k}`, streaming: sse, overrideConfig: { vars: { billingToken: signBillingToken(c.secret, 'm-claude') } } },
        { allowError: true },
      )) as { status: number; data: any };
      expect(r.status, String(JSON.stringify(r.data)).slice(0, 400)).toBe(200);
      // SSE answers in events (the text arrives token by token); the JSON answer carries it whole.
      if (sse) expect(String(r.data)).toContain('claude');
      else expect(r.data.text).toBe(`echo: ${q}`);
      const calls = c.anthropic().calls.slice(n + k);
      expect(calls).toHaveLength(1);
      // What Anthropic bills: message_start's input tokens and message_delta's cumulative output (LangChain's
      // message adds message_start's placeholder 1 to it; the charge does not).
      const u = calls[0]!.usage;
      expected += fee() + priceTokens(c.card(), calls[0]!.model, u.input_tokens, u.output_tokens).amount;
    }
    expect(formatUsd(before - (await balance('m-claude')))).toBe(formatUsd(expected));
    const llm = (await c.ledger().statement('m-claude')).filter((e) => e.type === 'settle' && e.chargeType !== 'PrivateFlowRun');
    expect(llm).toHaveLength(runs.length);
    c.step(`metered Anthropic (streaming on): ${runs.length} predictions (agentflow and chatflow, SSE and not), ${runs.length} provider calls, ${runs.length} token charges = $${formatUsd(expected)} with fees`);
  });

  c.e2e('the pricier first call: a customer who cannot cover fee + call gets the refusal (HTTP 200, marker), pays nothing, and the provider is never called', async () => {
    const id = await llmFlow();
    await c.customer('m-short', '0.01'); // exactly the fee: the first call cannot be held with it
    const n = c.model().calls.length;
    const r = await predict(id, 'm-short', 'can I afford this', 'm-short-1');
    expect(r.status).toBe(200);
    expect(r.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(markerOf(r.data)).toEqual({ type: 'billing_refusal', kind: 'insufficientFunds', code: 'INSUFFICIENT_FUNDS' });
    // The answer carries neither the customer id nor amounts.
    expect(r.data.text).not.toMatch(/m-short|\$|\d\.\d/);
    expect(c.model().calls.length).toBe(n);
    expect(await balance('m-short')).toBe(parseUsd('0.01'));
    expect((await c.ledger().statement('m-short')).filter((e) => e.type !== 'topup' && e.type !== 'hold' && e.type !== 'release')).toEqual([]);
  });

  c.e2e('Agent node tool loop: model → Calculator (metered) → model, every step paid; a customer who cannot pay the tool gets the refusal with zero unpaid calls', async () => {
    const id = await agentFlow();
    const script = (req: any) => ((req.messages ?? []).some((m: any) => m.role === 'tool') ? 'the answer is 42' : { content: null, tool_calls: [{ name: 'calculator', arguments: { input: '6*7' } }] });
    c.model().setScript(script);
    try {
      await c.customer('m-agent', '1');
      const before = await balance('m-agent');
      const n = c.model().calls.length;
      const r = await predict(id, 'm-agent', 'what is 6*7', 'm-agent-1');
      expect(r.status, JSON.stringify(r.data).slice(0, 400)).toBe(200);
      expect(r.data.text).toBe('the answer is 42');
      const calls = c.model().calls.slice(n);
      expect(calls).toHaveLength(2);
      const tool = priceChargeType(c.card(), 'ObjectTransformer', 1).amount;
      const expected = fee() + tool + callPrice(calls[0]!) + callPrice(calls[1]!);
      expect(formatUsd(before - (await balance('m-agent')))).toBe(formatUsd(expected));
      c.step(`agent tool loop: fee + 2 calls + calculator = $${formatUsd(expected)}`);

      // Enough for the fee and the first call, not for the $0.01 tool: the tool is refused before it runs,
      // its answer is the refusal, and the run stays refused, so the model is not called again.
      await c.customer('m-agent-poor', '0.015');
      const m = c.model().calls.length;
      const p = await predict(id, 'm-agent-poor', 'what is 6*7', 'm-agent-poor-1');
      expect(p.status, JSON.stringify(p.data).slice(0, 400)).toBe(200);
      expect(p.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
      const paid = c.model().calls.slice(m);
      expect(paid).toHaveLength(1);
      expect(formatUsd(await tokenCharges('m-agent-poor'))).toBe(formatUsd(callPrice(paid[0]!)));
      const b = await c.ledger().balance('m-agent-poor');
      expect(b.balance).toBeGreaterThanOrEqual(0n);
      expect(formatUsd(parseUsd('0.015') - b.balance)).toBe(formatUsd(fee() + callPrice(paid[0]!)));
    } finally {
      c.model().setScript(null);
    }
  }, 120_000);

  c.e2e('Condition Agent on OpenAI (metered): a refused routing call is an answer (HTTP 200, the operator’s message), no fee, zero provider calls', async () => {
    const id = await conditionFlow();
    await c.customer('m-cond-short', '0.01'); // the fee alone: the routing call cannot be held
    const n = c.model().calls.length;
    const r = await predict(id, 'm-cond-short', 'how much do I owe', 'm-cond-short-1');
    expect(r.status, JSON.stringify(r.data).slice(0, 400)).toBe(200);
    // The Condition Agent routes to its last branch; the run is refused, so that branch's metered LLM answers the refusal.
    expect(r.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(c.model().calls.length).toBe(n);
    expect(await balance('m-cond-short')).toBe(parseUsd('0.01'));
    expect((await c.ledger().statement('m-cond-short')).filter((e) => e.type === 'charge' || e.type === 'settle')).toEqual([]);
  });

  /**
   * 30 concurrent one-call predictions on a balance that pays for exactly K of them at their actual cost
   * (the K-th still has its fee + maximum to reserve at admission; a (K+1)-th would not): K answered, the rest
   * refused with HTTP 200, every provider call paid.
   */
  async function burst(canvas: string, flowId: string, K: number): Promise<void> {
    const question = `burst on the ${canvas}`;
    // What one prediction reserves at admission (fee + its call's maximum) and what it costs, from a calibration run.
    const cal = `m-cal-${canvas}`;
    await c.customer(cal, '1');
    const r0 = await predict(flowId, cal, question, `${cal}-1`);
    expect(r0.data.text).toBe(`echo: ${question}`);
    const hold = (await c.ledger().statement(cal)).find((e) => e.type === 'hold')!.heldDelta;
    const cost = parseUsd('1') - (await balance(cal));
    expect(hold).toBeGreaterThan(cost);
    expect(cost).toBeGreaterThan(fee());
    const who = `m-burst-${canvas}`;
    const topUp = formatUsd(cost * BigInt(K) + (hold - cost) + (cost - (hold - cost)) / 2n);
    await c.customer(who, topUp);
    const n = c.model().calls.length;
    const results = await Promise.all(Array.from({ length: 30 }, (_, k) => predict(flowId, who, question, `${who}-${k}`)));
    const answered = results.filter((r) => r.status === 200 && r.data.text === `echo: ${question}`);
    const refused = results.filter((r) => r.status === 200 && r.data.text === DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    const calls = c.model().calls.slice(n);
    const summary = results.map((r) => (r.status === 200 ? String(r.data.text).slice(0, 20) : `HTTP ${r.status}: ${JSON.stringify(r.data).slice(0, 200)}`));
    expect(answered.length, summary.join(' | ')).toBe(K);
    expect(refused.length, summary.join(' | ')).toBe(30 - K);
    expect(calls).toHaveLength(K);
    const b = await c.ledger().balance(who);
    expect(b.balance).toBeGreaterThanOrEqual(0n);
    expect(formatUsd(parseUsd(topUp) - b.balance)).toBe(formatUsd(BigInt(K) * fee() + calls.reduce((a, x) => a + callPrice(x), 0n)));
    expect((await c.ledger().checkInvariants()).ok).toBe(true);
    c.step(`${canvas} burst: 30 concurrent on $${topUp} (cost $${formatUsd(cost)}, reserve $${formatUsd(hold)} each) → ${answered.length} answered, ${refused.length} refused (HTTP 200), ${calls.length} provider calls, all paid`);
  }

  c.e2e('burst of 30 concurrent agentflow predictions on a balance that pays for 5: exactly 5 answered, 25 refusals with HTTP 200, every call paid', async () => {
    await burst('agentflow', await llmFlow(), 5);
  }, 180_000);

  c.e2e('burst of 30 concurrent chatflow predictions on a balance that pays for 5: exactly 5 answered, 25 refusals with HTTP 200, every call paid', async () => {
    await burst('chatflow', await chatFlow(), 5);
  }, 180_000);

  c.e2e('bring your own key: a free plan is refused with the operator’s key and runs with the customer’s own, which is never stored', async () => {
    const id = await llmFlow();
    await c.quota().createPlan({ id: 'byok-only', name: 'BYOK only', basePriceUsd: '0', sessionsIncluded: 10, managedModels: false });
    await c.customer('m-byok', '1', 'byok-only');
    const n = c.model().calls.length;
    const refused = await predict(id, 'm-byok', 'use the operator key', 'm-byok-1');
    expect(refused.status).toBe(200);
    expect(refused.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.byokRequired);
    expect(c.model().calls.length).toBe(n);
    const key = 'sk-customer-own-key-0123456789';
    const ok = await predict(id, 'm-byok', 'use my own key', 'm-byok-2', { customerApiKey: key });
    expect(ok.status, JSON.stringify(ok.data).slice(0, 400)).toBe(200);
    expect(ok.data.text).toBe('echo: use my own key');
    const calls = c.model().calls.slice(n);
    expect(calls).toHaveLength(1);
    expect(calls[0]!.headers.authorization).toBe(`Bearer ${key}`);
    // Neither the answer nor what Flowise stored of the execution carries the key.
    expect(JSON.stringify(ok.data)).not.toContain(key);
    if (ok.data.executionId) {
      const exec = await c.client().get(`/api/v1/executions/${ok.data.executionId}`, { allowError: true });
      expect(JSON.stringify(exec)).not.toContain(key);
    }
  });

  c.e2e('Langfuse on the metered agentflow: the trace’s costs sum to the ledger’s charges for the prediction', async () => {
    const id = await llmFlow();
    await c.client().updateChatflow(id, { analytic: { langFuse: { credentialId: c.ids().langfuse, status: true } } });
    try {
      await c.customer('m-traced', '1');
      const before = await balance('m-traced');
      const r = await predict(id, 'm-traced', 'trace the metered call', 'm-traced-1');
      expect(r.status).toBe(200);
      const spent = before - (await balance('m-traced'));
      const found = await c.langfuse().waitFor(() => {
        for (const v of c.langfuse().traces().values()) {
          if (v.trace.sessionId !== 'm-traced-1') continue;
          const costs = v.observations.filter((o: any) => o.metadata?.billing_usd !== undefined);
          // the trace carries the billing metadata too
          if (costs.length >= 2 && v.trace.metadata?.[BILLING_METADATA_KEYS.customerId] === 'm-traced') return { v, costs };
        }
        return undefined;
      }, 45_000);
      const sum = found.costs.reduce((a: Nanos, o: any) => a + parseUsd(String(o.metadata.billing_usd)), 0n);
      expect(formatUsd(sum)).toBe(formatUsd(spent));
      c.step(`langfuse metered agentflow: ${found.costs.length} costs sum to $${formatUsd(sum)} = ledger`);
    } finally {
      await c.client().updateChatflow(id, { analytic: {} });
    }
  }, 90_000);

  c.e2e('Langfuse on the metered chatflow: the trace’s costs (fee and call) sum to the ledger’s charges for the prediction', async () => {
    const id = await chatFlow();
    await c.client().updateChatflow(id, { analytic: { langFuse: { credentialId: c.ids().langfuse, status: true } } });
    try {
      await c.customer('m-traced-chat', '1');
      const before = await balance('m-traced-chat');
      const r = await predict(id, 'm-traced-chat', 'trace the metered chatflow', 'm-traced-chat-1');
      expect(r.data.text).toBe('echo: trace the metered chatflow');
      const spent = before - (await balance('m-traced-chat'));
      const usdOf = (o: any) => o.metadata?.billing_usd;
      const found = await c.langfuse().waitFor(() => {
        for (const v of c.langfuse().traces().values()) {
          if (v.trace.sessionId !== 'm-traced-chat-1') continue;
          const costs = v.observations.filter((o: any) => usdOf(o) !== undefined);
          if (costs.length >= 2 && v.trace.metadata?.[BILLING_METADATA_KEYS.customerId] === 'm-traced-chat') return { v, costs };
        }
        return undefined;
      }, 45_000);
      const sum = found.costs.reduce((a: Nanos, o: any) => a + parseUsd(String(usdOf(o))), 0n);
      expect(formatUsd(sum)).toBe(formatUsd(spent));
      c.step(`langfuse metered chatflow: ${found.costs.length} costs sum to $${formatUsd(sum)} = ledger`);
    } finally {
      await c.client().updateChatflow(id, { analytic: {} });
    }
  }, 90_000);

  c.e2e('a real browser: OpenAI (metered) is in the LLM node’s Model list, its provider and billing settings render, and the flow saves', async () => {
    const id = await llmFlow();
    await c.browser(async (page, shot) => {
      await page.goto(`${c.client().url}/v2/agentcanvas/${id}`, { waitUntil: 'domcontentloaded' });
      await page.getByText('LLM 0', { exact: true }).first().waitFor({ timeout: 30_000 });
      await page.waitForTimeout(1000);
      await page.getByText('LLM 0', { exact: true }).first().dblclick();
      await page.waitForTimeout(1500);
      await shot('metered-model-dialog');
      await page.getByText('OpenAI (metered) Parameters').first().click({ timeout: 30_000 });
      // Required fields carry a "*" in the same element, so match the label's start.
      for (const label of ['Model Name', 'Temperature', 'Billing Ledger', 'Customer Source']) await page.getByText(new RegExp(`^${label}`)).first().waitFor({ timeout: 15_000 });
      await shot('metered-model-config');
      // The Model list offers the variant beside the original.
      await page.locator('input[value="OpenAI (metered)"]').first().click();
      await page.getByRole('option', { name: 'OpenAI (metered)' }).first().waitFor({ timeout: 15_000 });
      await page.getByRole('option', { name: 'OpenAI', exact: true }).first().waitFor({ timeout: 15_000 });
      await shot('metered-model-list');
      await page.keyboard.press('Escape');
      await page.keyboard.press('Escape');
      await page.waitForTimeout(500);
      await page.locator('button[title="Save Agentflow"], button:has(svg.tabler-icon-device-floppy)').first().click();
      await page.waitForTimeout(2000);
      const saved = JSON.parse((await c.client().getChatflow(id)).flowData);
      const llm = saved.nodes.find((x: any) => x.id === 'llmAgentflow_0');
      expect(llm.data.inputs.llmModel).toBe('chatOpenAIMetered');
      expect(llm.data.inputs.llmModelConfig).toMatchObject({ llmModel: 'chatOpenAIMetered', billingLedgerCredential: c.ids().ledger, modelName: 'gpt-4o-mini' });
    });
    // The saved flow still runs, metered.
    await c.customer('m-ui', '1');
    const r = await predict(id, 'm-ui', 'after saving in the UI', 'm-ui-1');
    expect(r.data.text).toBe('echo: after saving in the UI');
    fs.mkdirSync(path.join('.test-artifacts'), { recursive: true });
  }, 120_000, { retry: 1 });
}
