/**
 * End to end against a real Flowise 3.1.4 (npm install cached outside the repo, Node 24), on loopback:
 * the installer puts the plugin into that install, Flowise starts with a temporary home, and the test
 * drives it through its REST API with the example flows from examples/. Skipped (with the reason) only
 * when the Flowise install itself cannot be made.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { signBillingToken } from '../../src/identity';
import { doctor, install, uninstall } from '../../src/installer';
import { openLedger } from '../../src/ledger/open';
import type { SqlLedger } from '../../src/ledger/sql-ledger';
import { formatUsd, type Nanos, parseUsd } from '../../src/money';
import { priceChargeType, priceTokens } from '../../src/pricing/price';
import type { RateCard } from '../../src/pricing/ratecard';
import { QuotaService } from '../../src/quota/service';
import { DEFAULT_REFUSAL_MESSAGES } from '../../src/plugin/guard';
import { BILLING_METADATA_KEYS } from '../../src/langfuse/metadata';
import { startLangfuseServer, type LangfuseServer } from '../support/langfuse-server';
import { startOpenAIServer, type OpenAIServer, type RecordedCall } from '../support/openai-server';
import { ANTHROPIC_KEY, startAnthropicServer, type AnthropicServer } from '../support/anthropic-server';
import { registerAlertScenarios } from './alerts.scenarios';
import { registerMeteredScenarios } from './metered.scenarios';
import { flowiseDatabase } from './flowise-database';
// @ts-expect-error plain ESM helper without types
import * as env from './flowise-env.mjs';

const ROOT = path.resolve(__dirname, '..', '..');
const SECRET = 'e2e-billing-token-secret-0123456789abcdef';
const ARTIFACTS = path.join(ROOT, '.test-artifacts');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'];

type Api = ReturnType<typeof env.api> & Record<string, any>;
type Flow = { nodes: any[]; edges: any[] };

let inst: { dir: string; node: string } | null = null;
let skipReason = '';

/** A test that is skipped, with the reason printed once, when Flowise cannot be installed on this machine. */
function e2e(name: string, fn: (ctx: TestContext) => Promise<void>, timeout?: number, opts: { retry?: number } = {}) {
  it(name, { timeout, retry: opts.retry }, async (ctx) => {
    if (!inst) ctx.skip(skipReason);
    try {
      await fn(ctx);
    } catch (e) {
      // No browser here is a fact about the machine, not the code: skipped with the reason (listed under
      // NOT RUN after the summary). `.ci/run` installs Chromium so CI always runs these checks.
      if (e instanceof BrowserUnavailable) ctx.skip(e.message);
      throw e;
    }
  });
}

class BrowserUnavailable extends Error {}

/** Chromium, or a BrowserUnavailable saying why not (missing, disabled, or it cannot start here). */
async function launchChromium() {
  if (!fs.existsSync(CHROMIUM)) throw new BrowserUnavailable(`no Chromium at ${CHROMIUM}: install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH`);
  if (process.env.FB_E2E_SKIP_BROWSER === '1') throw new BrowserUnavailable('FB_E2E_SKIP_BROWSER=1');
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS }).catch((e: Error) => {
    throw new BrowserUnavailable(`Chromium at ${CHROMIUM} does not start here: ${e.message.split('\n')[0]}`);
  });
}

const step = (() => {
  const t0 = Date.now();
  return (msg: string) => process.stdout.write(`[flowise e2e +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
})();

function loadExample(file: string): Flow {
  return JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', file), 'utf8'));
}

/** Fills what an operator fills after loading an example: credentials and the model server's base path. */
function prepare(flow: Flow, ids: { ledger: string; openai: string }, basepath: string): Flow {
  for (const n of flow.nodes) {
    const d = n.data;
    if (d.inputParams?.some((p: any) => p.type === 'credential' && p.credentialNames?.includes('billingLedger'))) d.credential = ids.ledger;
    if (d.name === 'chatOpenAI') {
      d.credential = ids.openai;
      d.inputs.basepath = basepath;
    }
    if (d.name === 'llmAgentflow') {
      d.inputs.llmModelConfig = { ...d.inputs.llmModelConfig, basepath, credential: ids.openai, FLOWISE_CREDENTIAL_ID: ids.openai };
      if ('billingLedgerCredential' in d.inputs.llmModelConfig) d.inputs.llmModelConfig.billingLedgerCredential = ids.ledger;
    }
  }
  return flow;
}

/** Let callers send the billing token as an override variable (API → Override Config → Variables). */
const API_CONFIG = {
  overrideConfig: {
    status: true,
    nodes: {},
    variables: [
      { id: '', name: 'billingToken', type: 'static', enabled: true },
      { id: '', name: 'customerApiKey', type: 'static', enabled: true },
    ],
  },
};

describe('Flowise 3.1.4 end to end', { timeout: 180_000 }, () => {
  let fw: any;
  let flowiseDb: Awaited<ReturnType<typeof flowiseDatabase>> | undefined;
  let client: Api;
  let model: OpenAIServer;
  let anthropic: AnthropicServer;
  let langfuse: LangfuseServer;
  let ledger: SqlLedger;
  let quota: QuotaService;
  let card: RateCard;
  let home: string;
  let ledgerPath: string;
  let chatflowId: string;
  let agentflowId: string;
  let toolAgentId: string;
  const ids = { ledger: '', openai: '', anthropic: '', langfuse: '' };
  const fee = () => priceChargeType(card, 'PrivateFlowRun', 1).amount;
  const callPrice = (c: RecordedCall) => {
    const u = c.response!.usage!;
    return priceTokens(card, c.body.model, u.prompt_tokens, u.completion_tokens).amount;
  };

  async function customer(id: string, topUpUsd: string, plan = 'starter') {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: parseUsd(topUpUsd), idempotencyKey: `e2e-topup-${id}` });
    await quota.subscribe({ customerId: id, planId: plan });
  }

  const predict = (flowId: string, customerId: string | null, question: string, chatId: string, token?: string) =>
    client.predict(
      flowId,
      { question, chatId, overrideConfig: { vars: { billingToken: token ?? (customerId ? signBillingToken(SECRET, customerId) : '') } } },
      { allowError: true },
    ) as Promise<{ status: number; data: any }>;

  const balance = async (id: string) => (await ledger.balance(id)).balance;
  /** The prediction's run returns its unused reservation when it ends (2 s without a call in flight): wait for that. */
  const heldReturned = async (id: string) => {
    const until = Date.now() + 15_000;
    for (;;) {
      const b = await ledger.balance(id);
      if (b.held === 0n || Date.now() > until) return b;
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  beforeAll(async () => {
    const t0 = Date.now();
    try {
      inst = await env.ensureFlowise({ log: step });
    } catch (e) {
      skipReason = `Flowise ${env.FLOWISE_VERSION} could not be installed here: ${(e as Error).message.split('\n')[0]}`;
      console.warn(`[flowise e2e] SKIPPED: ${skipReason}`);
      return;
    }
    // 1. the plugin, installed by the installer into the cached Flowise install
    const installed = install({ flowise: inst!.dir });
    step(`installer: ${installed.action} ${installed.files} files into ${installed.componentsDir}`);
    const report = doctor({ flowise: inst!.dir, node: inst!.node });
    expect(report.problems).toEqual([]);
    expect(report.load?.nodes.sort()).toEqual(['billingGateAgentflow', 'billingUsageTool', 'chargeAgentflow', 'meteredChatModel', 'meteredTool', 'quotaGuard']);
    expect(report.load?.sqliteDriver).toBe('node:sqlite');
    step(`doctor OK (Node ${report.load?.nodeVersion}, @langchain/core ${report.langchainCore.billing?.version} = flowise-components' copy)`);

    // 2. loopback servers and the ledger the flows will use
    model = await startOpenAIServer();
    anthropic = await startAnthropicServer();
    langfuse = await startLangfuseServer();
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-e2e-'));
    ledgerPath = path.join(home, 'billing.sqlite');
    ledger = await openLedger(ledgerPath);
    quota = new QuotaService(ledger, { actor: 'e2e' });
    card = await ledger.activeRateCard();

    // 3. Flowise with a temporary home; account, credentials and flows through its REST API
    // Flowise's own database on PostgreSQL: its SQLite answers concurrent predictions with SQLITE_BUSY (after the model was called).
    flowiseDb = await flowiseDatabase();
    // Flowise's Anthropic node has no base URL input; its SDK reads ANTHROPIC_BASE_URL.
    fw = await env.startFlowise({ home: path.join(home, 'flowise-home'), log: () => undefined, env: { ...flowiseDb.env, ANTHROPIC_BASE_URL: anthropic.baseURL } });
    step(`Flowise up in ${(fw.startupMs / 1000).toFixed(1)}s at ${fw.url}`);
    client = env.api(fw.url);
    await client.setup();
    ids.ledger = (await client.createCredential({ name: 'Billing ledger', credentialName: 'billingLedger', plainDataObj: { ledgerDatabase: ledgerPath, billingTokenSecret: SECRET } })).id;
    ids.openai = (await client.createCredential({ name: 'Loopback OpenAI', credentialName: 'openAIApi', plainDataObj: { openAIApiKey: 'sk-e2e' } })).id;
    ids.anthropic = (await client.createCredential({ name: 'Loopback Anthropic', credentialName: 'anthropicApi', plainDataObj: { anthropicApiKey: ANTHROPIC_KEY } })).id;
    ids.langfuse = (
      await client.createCredential({
        name: 'Loopback Langfuse',
        credentialName: 'langfuseApi',
        plainDataObj: { langFuseSecretKey: langfuse.secretKey, langFusePublicKey: langfuse.publicKey, langFuseEndpoint: langfuse.baseUrl },
      })
    ).id;
    const chat = await client.createChatflow({ name: 'Metered conversation', flowData: prepare(loadExample('metered-conversation-chatflow.json'), ids, model.baseURL), type: 'CHATFLOW' });
    chatflowId = chat.id;
    await client.updateChatflow(chatflowId, { apiConfig: API_CONFIG });
    const agent = await client.createChatflow({ name: 'Billing gate agentflow', flowData: prepare(loadExample('billing-gate-agentflow.json'), ids, model.baseURL), type: 'AGENTFLOW' });
    agentflowId = agent.id;
    await client.updateChatflow(agentflowId, { apiConfig: API_CONFIG });
    const toolAgent = await client.createChatflow({ name: 'Metered tool agent', flowData: prepare(loadExample('metered-tool-agent-chatflow.json'), ids, model.baseURL), type: 'CHATFLOW' });
    toolAgentId = toolAgent.id;
    await client.updateChatflow(toolAgentId, { apiConfig: API_CONFIG });
    step(`set up in ${((Date.now() - t0) / 1000).toFixed(1)}s (chatflow ${chatflowId}, agentflow ${agentflowId})`);
  }, 1_200_000); // a first run installs Flowise (several minutes; progress is logged every 30 s)

  afterAll(async () => {
    await fw?.stop({ keepHome: false });
    await flowiseDb?.drop();
    await model?.close();
    await anthropic?.close();
    await langfuse?.close();
    await ledger?.close();
    if (home) fs.rmSync(home, { recursive: true, force: true });
    if (inst) {
      const u = uninstall({ flowise: inst.dir });
      step(`uninstalled: ${u.removed} files removed`);
    }
  }, 60_000);

  e2e('charges each chatflow prediction exactly: the run fee plus every model call at the rate card, sessions per conversation', async () => {
    await customer('acme', '5');
    const before = await balance('acme');
    const expected: Nanos[] = [];
    const conversations = [
      ['acme-c1', 'hello there'],
      ['acme-c1', 'how much is a token'],
      ['acme-c2', 'a new conversation'],
      ['acme-c1', 'and one more in the first'],
    ] as const;
    for (const [chatId, q] of conversations) {
      const n = model.calls.length;
      const r = await predict(chatflowId, 'acme', q, chatId);
      expect(r.status, JSON.stringify(r.data)).toBe(200);
      expect(r.data.text).toBe(`echo: ${q}`);
      const calls = model.calls.slice(n);
      expect(calls).toHaveLength(1);
      expected.push(fee() + callPrice(calls[0]!));
    }
    const total = expected.reduce((a, b) => a + b, 0n);
    expect(formatUsd(before - (await balance('acme')))).toBe(formatUsd(total));
    const entries = await ledger.statement('acme');
    // The fee is taken from the run's reservation (held with the first call's maximum), not charged up front.
    const isFee = (e: { chargeType: string | null }) => e.chargeType === 'PrivateFlowRun';
    const fees = entries.filter((e) => isFee(e) && (e.type === 'charge' || e.type === 'settle')).map((e) => -e.amount);
    expect(fees).toEqual(conversations.map(() => fee()));
    const settled = entries.filter((e) => e.type === 'settle' && !isFee(e)).map((e) => -e.amount);
    expect(settled).toEqual(expected.map((x) => x - fee()));
    expect((await heldReturned('acme')).held).toBe(0n);
    const usage = await quota.usage('acme');
    expect(usage.sessionsUsed).toBe(2);
    step(`4 predictions for acme: charged $${formatUsd(total)} = 4 × $${formatUsd(fee())} fee + tokens; 2 sessions`);
  });

  e2e('refuses a forged or missing token with the unauthorized message, charges nothing and never calls the model', async () => {
    await customer('victim', '1');
    const before = await balance('victim');
    const n = model.calls.length;
    const forged = signBillingToken('an-attacker-secret-that-is-long-enough-!!', 'victim');
    const r1 = await predict(chatflowId, null, 'bill the victim', 'forged-1', forged);
    expect(r1.status).toBe(200);
    expect(r1.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    // an unsigned customer id in the token variable is not a token
    const r2 = await predict(chatflowId, null, 'bill the victim', 'forged-2', 'victim');
    expect(r2.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    // Agentflow: the Billing Gate refuses, and the metered LLM and Charge after it answer the refusal without running.
    const r3 = await predict(agentflowId, null, 'bill the victim', 'forged-3', forged);
    expect(r3.status, JSON.stringify(r3.data).slice(0, 300)).toBe(200);
    expect(r3.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    expect(model.calls.length).toBe(n);
    expect(await balance('victim')).toBe(before);
    expect(await ledger.statement('victim')).toHaveLength(1); // the top-up only
  });

  e2e('answers with the insufficient-funds message once the balance is exhausted, and the model server gets no further call', async () => {
    await customer('poor', '0.025');
    const first = await predict(chatflowId, 'poor', 'first question', 'poor-1');
    expect(first.data.text).toBe('echo: first question');
    const n = model.calls.length;
    for (const q of ['second question', 'third question']) {
      const r = await predict(chatflowId, 'poor', q, 'poor-1');
      expect(r.status).toBe(200);
      expect(r.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    }
    expect(model.calls.length).toBe(n);
    const b = await heldReturned('poor');
    expect(b.balance >= 0n && b.held === 0n).toBe(true);
    // the refusal is stored as the answer in the chat history, as Flowise does for moderation
    const messages = await client.get(`/api/v1/chatmessage/${chatflowId}?chatId=poor-1`);
    expect(messages.map((m: any) => m.content)).toContain(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
  });

  e2e('the pricier first call behind a Quota Guard: the guard only checks, the model cannot hold fee + call, so no fee is charged and the answer is the operator’s message (HTTP 200, zero provider calls)', async () => {
    const flow = prepare(loadExample('metered-conversation-chatflow.json'), ids, model.baseURL);
    for (const n of flow.nodes) {
      if (n.data.name === 'chatOpenAI') n.data.inputs.modelName = 'gpt-4o'; // its 4096-token maximum costs more than is left after the fee
      if (n.data.name === 'quotaGuard') n.data.inputs.minimumBalanceUsd = '0';
    }
    const pricey = await client.createChatflow({ name: 'Pricier first call', flowData: flow, type: 'CHATFLOW' });
    await client.updateChatflow(pricey.id, { apiConfig: API_CONFIG });
    await customer('pricey', '0.03');
    const n = model.calls.length;
    const r = await predict(pricey.id, 'pricey', 'an expensive question', 'pricey-1');
    expect(r.status, JSON.stringify(r.data).slice(0, 300)).toBe(200);
    expect(r.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(r.data.text).not.toMatch(/pricey|\$|\d\.\d/);
    expect(model.calls.length).toBe(n);
    expect(await balance('pricey')).toBe(parseUsd('0.03'));
    expect((await ledger.balance('pricey')).held).toBe(0n);
    expect((await ledger.statement('pricey')).filter((e) => e.type === 'charge' || e.type === 'settle')).toEqual([]);
  });

  e2e('a new conversation past the plan’s session quota gets the quota message; the open conversation continues', async () => {
    await quota.createPlan({ id: 'one-session', name: 'One session', basePriceUsd: '0', sessionsIncluded: 1, managedModels: true });
    await customer('tiny', '1', 'one-session');
    expect((await predict(chatflowId, 'tiny', 'first conversation', 'tiny-a')).data.text).toBe('echo: first conversation');
    const n = model.calls.length;
    const before = await balance('tiny');
    const refused = await predict(chatflowId, 'tiny', 'second conversation', 'tiny-b');
    expect(refused.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.quotaExceeded);
    expect(model.calls.length).toBe(n);
    expect(await balance('tiny')).toBe(before);
    expect((await predict(chatflowId, 'tiny', 'still the first', 'tiny-a')).data.text).toBe('echo: still the first');
    expect((await quota.usage('tiny')).sessionsUsed).toBe(1);
  });

  e2e('never overdraws under 20 concurrent predictions', async () => {
    await customer('burst', '0.1');
    const n = model.calls.length;
    const results = await Promise.all(Array.from({ length: 20 }, (_, k) => predict(chatflowId, 'burst', `burst question ${k}`, `burst-${k}`)));
    const answered = results.filter((r) => r.status === 200 && String(r.data.text).startsWith('echo:'));
    const b = await heldReturned('burst');
    expect(b.balance).toBeGreaterThanOrEqual(0n);
    expect(b.held).toBe(0n);
    const calls = model.calls.slice(n);
    // every call that reached the model was paid for, and nothing else was charged
    const spent = parseUsd('0.1') - b.balance;
    const fees = (await ledger.statement('burst')).filter((e) => e.chargeType === 'PrivateFlowRun' && (e.type === 'charge' || e.type === 'settle')).length;
    expect(formatUsd(spent)).toBe(formatUsd(BigInt(fees) * fee() + calls.reduce((a, c) => a + callPrice(c), 0n)));
    expect(calls.length).toBe(answered.length);
    expect(answered.length).toBeGreaterThan(0);
    expect(answered.length).toBeLessThan(20);
    expect((await ledger.checkInvariants()).ok).toBe(true);
    const statuses = results.map((r) => (r.status === 200 ? (String(r.data.text).startsWith('echo:') ? 'ok' : r.data.text) : `HTTP ${r.status}`));
    step(`20 concurrent: ${answered.length} answered, balance $${formatUsd(b.balance)}; others: ${[...new Set(statuses.filter((s) => s !== 'ok'))].join(' | ')}`);
    // Refused by Quota Guard's check or, once concurrent runs took the money after it, by the metered model's
    // hold: every refusal is the operator's message with HTTP 200.
    expect(statuses.filter((s) => s !== 'ok')).toEqual(Array(20 - answered.length).fill(DEFAULT_REFUSAL_MESSAGES.insufficientFunds));
  });

  e2e('tool agent: the Metered Tool charges its ChargeType per call and the Usage Tool reports the caller’s own account', async () => {
    await customer('tooluser', '1');
    const before = await balance('tooluser');
    const n = model.calls.length;
    model.setScript((req) => {
      const toolResults = (req.messages ?? []).filter((m) => m.role === 'tool').length;
      if (toolResults === 0) return { content: null, tool_calls: [{ name: 'calculator', arguments: { input: '6*7' } }] };
      if (toolResults === 1) return { content: null, tool_calls: [{ name: 'billing_usage', arguments: { input: 'usage of customer acme' } }] };
      return 'the answer is 42';
    });
    let r;
    try {
      r = await predict(toolAgentId, 'tooluser', 'what is 6*7 and how much have I used?', 'tool-1');
    } finally {
      model.setScript(null);
    }
    expect(r.status, JSON.stringify(r.data).slice(0, 500)).toBe(200);
    expect(r.data.text).toBe('the answer is 42');
    const calls = model.calls.slice(n);
    expect(calls).toHaveLength(3);
    const toolMessages = (calls[2]!.body.messages ?? []).filter((m) => m.role === 'tool').map((m) => String(m.content));
    expect(toolMessages[0]).toBe('42');
    const usage = JSON.parse(toolMessages[1]!);
    expect(usage).toMatchObject({ customerId: 'tooluser', plan: 'starter', sessionsUsed: 1 });
    const transform = priceChargeType(card, 'ObjectTransformer', 1).amount;
    const statement = await ledger.statement('tooluser');
    step(`tool agent statement: ${statement.map((e) => `${e.type}:${e.chargeType}:${formatUsd(e.amount)}`).join(', ')}`);
    const expected = fee() + transform + calls.reduce((a, c) => a + callPrice(c), 0n);
    expect(formatUsd(before - (await balance('tooluser')))).toBe(formatUsd(expected));
    const entries = (await ledger.statement('tooluser')).filter((e) => e.type === 'settle' && e.chargeType === 'ObjectTransformer');
    expect(entries.map((e) => -e.amount)).toEqual([transform]);
    step(`tool agent: 3 model calls + 1 metered calculator call ($${formatUsd(transform)}) + fee = $${formatUsd(expected)}`);
  });

  e2e('agentflow: Billing Gate → LLM (metered) → Charge: the run fee with the call’s reservation, the call’s exact tokens and the Charge, once per execution; a refused gate is an answer', async () => {
    await customer('agent', '2');
    const before = await balance('agent');
    const n = model.calls.length;
    const r = await predict(agentflowId, 'agent', 'hello agentflow', 'agent-1');
    expect(r.status, JSON.stringify(r.data).slice(0, 500)).toBe(200);
    expect(r.data.text).toBe('echo: hello agentflow');
    const calls = model.calls.slice(n);
    expect(calls).toHaveLength(1);
    const stepPrice = priceChargeType(card, 'Inference', 1).amount;
    const expected = fee() + callPrice(calls[0]!) + stepPrice;
    expect(formatUsd(before - (await balance('agent')))).toBe(formatUsd(expected));
    const charged = (await ledger.statement('agent')).filter((e) => e.type === 'charge' || e.type === 'settle');
    expect(charged.filter((e) => e.chargeType === 'PrivateFlowRun').map((e) => -e.amount)).toEqual([fee()]);
    expect(charged.filter((e) => e.chargeType === 'Inference').map((e) => -e.amount)).toEqual([stepPrice]);
    expect((await heldReturned('agent')).held).toBe(0n);
    expect((await quota.usage('agent')).sessionsUsed).toBe(1);
    // The gate refuses (fee + minimum not available): HTTP 200 with the operator's message, nothing charged, no provider call.
    await customer('agent-poor', '0.015');
    const m = model.calls.length;
    const p = await predict(agentflowId, 'agent-poor', 'hello agentflow', 'agent-poor-1');
    expect(p.status, JSON.stringify(p.data).slice(0, 500)).toBe(200);
    expect(p.data.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(model.calls.length).toBe(m);
    expect(await balance('agent-poor')).toBe(parseUsd('0.015'));
    step(`agentflow: fee $${formatUsd(fee())} + tokens + Inference $${formatUsd(stepPrice)} = $${formatUsd(expected)}; refused gate → HTTP 200, 0 calls`);
  });

  e2e('Langfuse analytics on the agentflow: the flow trace carries billing metadata and every charge with the ledger’s cost', async () => {
    await client.updateChatflow(agentflowId, { analytic: { langFuse: { credentialId: ids.langfuse, status: true } } });
    await customer('agent-traced', '1');
    const r = await predict(agentflowId, 'agent-traced', 'trace this agentflow', 'agent-traced-1');
    expect(r.status, JSON.stringify(r.data).slice(0, 300)).toBe(200);
    const K = BILLING_METADATA_KEYS;
    let found;
    try {
      found = await langfuse.waitFor(() => {
        for (const v of langfuse.traces().values()) {
          if (v.trace.sessionId !== 'agent-traced-1' || v.trace.metadata?.[K.customerId] !== 'agent-traced') continue;
          const costs = v.observations.filter((o) => o.name?.startsWith('billing:') && o.costDetails);
          if (costs.length === 3) return { v, costs }; // fee, the call's tokens, Charge
        }
        return undefined;
      }, 45_000);
    } finally {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      fs.writeFileSync(path.join(ARTIFACTS, 'langfuse-agentflow-traces.json'), JSON.stringify([...langfuse.traces().values()], null, 2));
    }
    const charges = (await ledger.statement('agent-traced')).filter((e) => e.type === 'charge' || e.type === 'settle');
    expect(charges).toHaveLength(3);
    const byName = Object.fromEntries(found.costs.map((o) => [o.name, o]));
    for (const c of charges) {
      const o = byName[`billing:${c.chargeType}`]!;
      expect(o.metadata.billing_usd).toBe(formatUsd(-c.amount));
      expect(o.costDetails!.total).toBe(Number(formatUsd(-c.amount)));
    }
    expect(found.v.trace.metadata[K.planTier]).toBe('starter');
    expect(found.v.observations.some((o) => o.type === 'GENERATION' && o.usageDetails?.total)).toBe(true);
    step(`langfuse agentflow: trace ${found.v.trace.id} costs ${found.costs.map((o) => `${o.name}=$${o.metadata.billing_usd}`).join(', ')}`);
  }, 90_000);

  e2e('Langfuse analytics on the chatflow: the trace’s generation carries the billing metadata, token usage and the ledger’s cost', async () => {
    await client.updateChatflow(chatflowId, { analytic: { langFuse: { credentialId: ids.langfuse, status: true } } });
    await customer('traced', '1');
    const before = await balance('traced');
    const n = model.calls.length;
    const r = await predict(chatflowId, 'traced', 'trace me please', 'traced-1');
    expect(r.data.text).toBe('echo: trace me please');
    const llmCost = callPrice(model.calls[n]!);
    const K = BILLING_METADATA_KEYS;
    const dump = () => {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      fs.writeFileSync(path.join(ARTIFACTS, 'langfuse-traces.json'), JSON.stringify([...langfuse.traces().values()], null, 2));
    };
    // Every charge of the prediction (the run fee and the call) is a cost on Flowise's trace, and the trace carries
    // the billing metadata; the call's generation keeps its token usage.
    const usdOf = (o: any) => o.metadata?.billing_usd;
    let view;
    try {
      view = await langfuse.waitFor(() => {
        for (const v of langfuse.traces().values()) {
          if (v.trace.sessionId !== 'traced-1' || v.trace.metadata?.[K.customerId] !== 'traced') continue;
          const gen = v.observations.find((o) => o.type === 'GENERATION' && o.usageDetails);
          const costs = v.observations.filter((o) => usdOf(o) !== undefined);
          if (gen && costs.length >= 2) return { trace: v, gen, costs };
        }
        return undefined;
      }, 45_000);
    } finally {
      dump();
    }
    const { gen, costs } = view;
    expect(view.trace.trace.metadata[K.conversationId]).toBe('traced-1');
    expect(view.trace.trace.metadata[K.rateCardVersion]).toBe(card.version);
    const u = model.calls[n]!.response!.usage!;
    expect(gen.usageDetails).toMatchObject({ input: u.prompt_tokens, output: u.completion_tokens, total: u.total_tokens });
    const spent = before - (await balance('traced'));
    expect(formatUsd(spent)).toBe(formatUsd(fee() + llmCost));
    const sum = costs.reduce((a: Nanos, o: any) => a + parseUsd(String(usdOf(o))), 0n);
    expect(formatUsd(sum)).toBe(formatUsd(spent));
    expect(costs.map((o: any) => o.name).sort()).toEqual(['billing:PrivateFlowRun', `billing:tokens:${model.calls[n]!.body.model}`].sort());
    step(`langfuse chatflow: trace ${view.trace.trace.id} costs ${costs.map((o: any) => `${o.name}=$${usdOf(o)}`).join(', ')} = ledger $${formatUsd(spent)}`);
  }, 90_000);

  e2e('a real browser finds the Billing nodes in the palettes and the Billing credentials in the credential dialog', async () => {
    await withBrowser(async (page, shot) => {
      // chatflow palette: category Billing with the four chatflow nodes
      await page.goto(`${fw.url}/canvas`, { waitUntil: 'domcontentloaded' });
      await page.locator('button[aria-label="add"]').click();
      try {
        // On a loaded machine the list can re-render after the category opened and close it again: reveal each
        // node (re-opening as needed), then require all four at once for the screenshot.
        const labels = ['Quota Guard', 'Metered Chat Model', 'Metered Tool', 'Usage Tool'];
        for (let attempt = 1; ; attempt++) {
          for (const label of labels) await reveal(page, label, 'Billing', 'Billing');
          const shown = await Promise.all(labels.map((l) => visible(page, l).isVisible()));
          if (shown.every(Boolean)) break;
          if (attempt === 3) throw new Error(`palette: not all Billing nodes visible at once (${labels.filter((_, i) => !shown[i]).join(', ')})`);
        }
      } catch (e) {
        await shot('palette-chatflow-billing-failed');
        throw e;
      }
      const palette = await shot('palette-chatflow-billing');

      // agentflow v2 palette: Billing Gate and Charge under Agent Flows
      await page.goto(`${fw.url}/v2/agentcanvas`, { waitUntil: 'domcontentloaded' });
      await page.locator('button[aria-label="add"]').click();
      await reveal(page, 'Billing Gate', 'Agent Flows', 'Billing Gate');
      await shot('palette-agentflow-billing-gate');
      await reveal(page, 'Charge', 'Agent Flows', 'Charge');
      await shot('palette-agentflow-charge');

      // credential dialog
      // The page hands the dialog the credential types it has loaded when the button is clicked, and the dialog
      // never refreshes them: click only after that list arrived, and reopen the dialog when it still came up empty.
      const typesLoaded = page.waitForResponse((r: any) => new URL(r.url()).pathname.endsWith('/api/v1/components-credentials') && r.ok(), { timeout: 60_000 });
      await page.goto(`${fw.url}/credentials`, { waitUntil: 'domcontentloaded' });
      await typesLoaded;
      const openDialog = async () => {
        if (await page.locator('#input-search-credential').isVisible()) await page.keyboard.press('Escape');
        await page.click('button:has-text("Add Credential")');
      };
      await openDialog();
      try {
        // The dialog filters its list when the search changes; on a loaded machine the list can settle after the
        // text: type the search again (reopening the dialog) until the result is there.
        await searchUntil(page, '#input-search-credential', 'Billing', 'Billing Ledger', 30_000, openDialog);
        await visible(page, 'Stripe Billing').waitFor({ timeout: 30_000 });
      } catch (e) {
        await shot('credentials-billing-failed');
        throw e;
      }
      await shot('credentials-billing');

      // the imported example chatflow on its canvas
      await page.goto(`${fw.url}/canvas/${chatflowId}`, { waitUntil: 'domcontentloaded' });
      for (const label of ['Quota Guard', 'Conversation Chain']) await visible(page, label).waitFor({ timeout: 30_000 });
      await page.waitForLoadState('networkidle', { timeout: 30_000 }).catch(() => undefined); // icons, for the screenshot only
      await shot('example-chatflow-canvas');

      // The README's screenshot is refreshed on request only, so a test run leaves the work tree clean.
      const readmeShot = path.join(ROOT, 'docs', 'screenshots', 'palette-chatflow-billing.png');
      if (!fs.existsSync(readmeShot) || process.env.FB_UPDATE_SCREENSHOTS === '1') {
        fs.mkdirSync(path.dirname(readmeShot), { recursive: true });
        fs.copyFileSync(palette, readmeShot);
      }
      step(`browser: screenshots in ${ARTIFACTS}`);
    }, { height: 900 });
  }, 120_000);

  /** The first visible element whose whole text is `label`. */
  const visible = (page: any, label: string) => page.getByText(label, { exact: true }).filter({ visible: true }).first();

  /**
   * Waits until the palette shows `label`. The palette expands matching categories only when few nodes match the
   * search (with the metered variants installed, many do), otherwise `category` is a closed accordion: open it
   * when it is there and the node is not, and keep checking (the list re-renders as the search settles).
   */
  async function reveal(page: any, label: string, category: string, search: string, timeoutMs = 30_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    let opened = 0;
    await page.fill('#input-search-node', search);
    for (;;) {
      if (await visible(page, label).isVisible()) return;
      const header = visible(page, category);
      if (Date.now() - opened > 3000) {
        // Neither the node nor its category: the node list may have arrived after the search text; type it again.
        if (await header.isVisible()) await header.click().catch(() => undefined);
        else await page.fill('#input-search-node', '').then(() => page.fill('#input-search-node', search));
        opened = Date.now();
      }
      if (Date.now() > until) throw new Error(`"${label}" did not appear in the palette (category ${category})`);
      await visible(page, label).waitFor({ timeout: 1000 }).catch(() => undefined);
    }
  }

  /** Types `text` into the search box `selector` (again, every 3 s, after `retry` when given) until `label` shows. */
  async function searchUntil(page: any, selector: string, text: string, label: string, timeoutMs = 30_000, retry?: () => Promise<void>): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0 && retry) await retry();
      await page.fill(selector, '');
      await page.fill(selector, text);
      if (await visible(page, label).waitFor({ timeout: 3000 }).then(() => true, () => false)) return;
      if (Date.now() > until) throw new Error(`"${label}" did not appear after searching "${text}"`);
    }
  }

  /** A logged-in headless Chromium page on this Flowise (CDP screenshots into .test-artifacts). */
  async function withBrowser(fn: (page: any, shot: (name: string) => Promise<string>) => Promise<void>, { height = 1000 } = {}): Promise<void> {
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height } });
      const shot = async (name: string) => {
        const cdp = await page.context().newCDPSession(page);
        const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' });
        const file = path.join(ARTIFACTS, `${name}.png`);
        fs.writeFileSync(file, Buffer.from(data, 'base64'));
        return file;
      };
      await page.goto(`${fw.url}/`, { waitUntil: 'domcontentloaded' });
      await page.waitForURL(/\/signin/, { timeout: 30_000 });
      await page.fill('#username', client.email);
      await page.fill('#password', env.DEFAULT_PASSWORD ?? 'Billing-e2e-1!');
      await page.click('button:has-text("Login")');
      await page.waitForURL((u: URL) => !u.pathname.startsWith('/signin'), { timeout: 30_000 });
      await fn(page, shot);
    } finally {
      await browser.close();
    }
  }

  registerMeteredScenarios({
    e2e,
    step,
    client: () => client,
    model: () => model,
    anthropic: () => anthropic,
    langfuse: () => langfuse,
    ledger: () => ledger,
    quota: () => quota,
    card: () => card,
    ids: () => ids,
    secret: SECRET,
    apiConfig: API_CONFIG,
    customer,
    browser: withBrowser,
  });

  registerAlertScenarios({
    e2e,
    step,
    ledgerPath: () => ledgerPath,
    ledger: () => ledger,
    quota: () => quota,
    chatflowId: () => chatflowId,
    predict: (flowId, customerId, question, chatId) => predict(flowId, customerId, question, chatId),
  });
});
