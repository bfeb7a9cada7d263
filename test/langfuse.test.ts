import { randomUUID } from 'node:crypto';
import { inspect } from 'node:util';
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ChatOpenAI } from '@langchain/openai';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { RunnableLambda } from '@langchain/core/runnables';
import { tool, type StructuredToolInterface } from '@langchain/core/tools';
import { CallbackHandler } from 'langfuse-langchain';
import { BillingCallbackHandler } from '../src/metering/handler';
import type { BillingHandlerOptions } from '../src/metering/options';
import { billingRunConfig } from '../src/metering/run-config';
import { BILLING_METADATA_KEYS as K } from '../src/langfuse/metadata';
import { langfuseReporterFor, shutdownLangfuseReporters } from '../src/langfuse/reporter';
import { formatUsd, parseUsd } from '../src/money';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import type { AdmissionGate } from '../src/quota/gate';
import type { Charge } from '../src/ledger/types';
import { BACKENDS } from './support/backends';
import { openFlowRun } from '../src/plugin/flow-run';

import { installOfflineTiktoken, startOpenAIServer, type OpenAIServer } from './support/openai-server';
import { startLangfuseServer, type LangfuseServer } from './support/langfuse-server';

let openai: OpenAIServer;
let langfuse: LangfuseServer;
let uninstallTiktoken: () => void;
beforeAll(async () => {
  uninstallTiktoken = installOfflineTiktoken();
  openai = await startOpenAIServer();
  langfuse = await startLangfuseServer();
});
afterAll(async () => {
  await shutdownLangfuseReporters(500);
  uninstallTiktoken?.();
  await openai?.close();
  await langfuse?.close();
});
beforeEach(() => {
  openai.reset();
  openai.setScript(null);
  langfuse.reset();
  langfuse.setMode('ok');
});

const gate: AdmissionGate = {
  admitRun: async (i) => ({ session: 'new', sessionId: `s-${i.conversationId}`, tier: 'professional', sessionsUsed: 10, sessionsLimit: 10_000, sessionsRemaining: 9_990, periodStart: null, periodEnd: null, managedModels: true }),
};

const nanosOf = (usdNumber: number) => BigInt(Math.round(usdNumber * 1e9));
const cents = (nanos: bigint) => (nanos + 5_000_000n) / 10_000_000n;

describe.each(BACKENDS)('Langfuse costs and metadata on $name', (backend) => {
  let ledger: SqlLedger;
  let customerId: string;
  const opened: SqlLedger[] = [];
  beforeEach(async () => {
    ledger = await backend.open(await backend.freshTarget());
    opened.push(ledger);
    customerId = `lf-${randomUUID().slice(0, 8)}`;
    await ledger.createCustomer({ id: customerId });
    await ledger.topUp({ customerId, amount: parseUsd('5'), idempotencyKey: `top-${customerId}` });
  });
  afterAll(async () => {
    await Promise.all(opened.map((l) => l.close().catch(() => undefined)));
  });

  const billing = (extra: Partial<BillingHandlerOptions> = {}) =>
    new BillingCallbackHandler({
      ledger,
      customerId,
      conversationId: 'chat-42',
      gate,
      usageCategory: 'support-bot',
      costCenter: 'cc-7',
      computeTime: { reserveMs: 1000 },
      tools: { lookup: { chargeType: 'Inference', quantity: 1 } },
      langfuse: { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushAt: 1, requestTimeoutMs: 3000 },
      ...extra,
    });
  const lfHandler = () => new CallbackHandler({ publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushAt: 1, sessionId: 'chat-42' });
  const model = () => new ChatOpenAI({ model: 'gpt-4o-mini', apiKey: 'sk-test', configuration: { baseURL: openai.baseURL }, maxRetries: 0, maxTokens: 50 });
  const lookup = tool(async (input: Record<string, unknown>) => `found ${String(input.q)}`, {
    name: 'lookup',
    description: 'lookup tool',
    schema: { type: 'object', properties: { q: { type: 'string' } }, required: ['q'] },
  }) as unknown as StructuredToolInterface;

  /** prompt → ChatOpenAI → parser, then a priced tool, all in one root run. */
  const flow = () => {
    const chain = ChatPromptTemplate.fromMessages([['system', 'Be brief.'], ['human', '{q}']]).pipe(model()).pipe(new StringOutputParser());
    return RunnableLambda.from(async (q: string, config) => {
      const answer = await chain.invoke({ q }, config);
      return `${answer} / ${String(await lookup.invoke({ q }, config))}`;
    }).withConfig({ runName: 'flow' });
  };

  async function ledgerCharges(): Promise<Charge[]> {
    const entries = await ledger.statement(customerId);
    return Promise.all(entries.filter((e) => e.chargeId && (e.type === 'settle' || e.type === 'charge')).map((e) => ledger.getCharge(e.chargeId!)));
  }

  it('the real langfuse-langchain handler writes the billing metadata; the trace costs equal the ledger charges', async () => {
    const h = billing();
    const lf = lfHandler();
    const out = await flow().invoke('capital of France', billingRunConfig(h, { callbacks: [lf] }));
    expect(out).toBe('echo: capital of France / found capital of France');
    await Promise.all([lf.shutdownAsync(), h.flushLangfuse(5000)]);

    const charges = await ledgerCharges();
    expect(charges.map((c) => c.chargeType).sort()).toEqual(['Inference', 'PrivateFlowRun', 'compute', 'tokens:gpt-4o-mini']);
    const rootId = h.runs[0]!.rootRunId;
    const ledgerTotal = charges.reduce((a, c) => a + c.amount, 0n);
    expect(h.runs[0]!.cost).toBe(ledgerTotal);

    const view = await langfuse.waitFor(() => {
      const v = langfuse.traces().get(rootId);
      return v && v.observations.filter((o) => o.costDetails).length === 4 && v.trace.metadata[K.runCostUsd] ? v : undefined;
    });
    // Trace: id = root run id; billing metadata from the run config and from the handler's report.
    expect(view.trace.name).toBe('flow');
    expect(view.trace.metadata).toMatchObject({
      [K.customerId]: customerId,
      [K.conversationId]: 'chat-42',
      [K.usageCategory]: 'support-bot',
      [K.costCenter]: 'cc-7',
      [K.rateCardVersion]: '2026-12-default',
      [K.planTier]: 'professional',
      [K.quotaRemaining]: 9990,
      [K.balanceAfterUsd]: formatUsd((await ledger.balance(customerId)).balance),
      [K.runCostUsd]: formatUsd(ledgerTotal),
    });
    // Observations written by langfuse-langchain carry the billing fields too (inherited config metadata + admission fields).
    const generation = view.observations.find((o) => o.type === 'GENERATION' && o.usageDetails)!;
    expect(generation.metadata).toMatchObject({ [K.customerId]: customerId, [K.costCenter]: 'cc-7', [K.planTier]: 'professional', [K.quotaRemaining]: 9990 });
    // …and the LLM charge landed on that same generation, next to LangChain's usage.
    const llmCharge = charges.find((c) => c.chargeType === 'tokens:gpt-4o-mini')!;
    expect(generation.costDetails?.total).toBe(Number(formatUsd(llmCharge.amount)));
    expect(generation.metadata).toMatchObject({ billing_charge_id: llmCharge.id, billing_usd: formatUsd(llmCharge.amount) });
    const usage = openai.calls[0]!.response!.usage!;
    expect(generation.usageDetails).toMatchObject({ input: usage.prompt_tokens, output: usage.completion_tokens });

    // Per trace, Langfuse's costs equal the ledger's exactly (nano-USD), hence to the cent.
    const lfTotal = view.observations.reduce((a, o) => a + nanosOf(o.costDetails?.total ?? 0), 0n);
    expect(lfTotal).toBe(ledgerTotal);
    expect(cents(lfTotal)).toBe(cents(ledgerTotal));
    // Each charge appears once, by its id.
    const chargeIds = view.observations.map((o) => o.metadata.billing_charge_id).filter(Boolean).sort();
    expect(chargeIds).toEqual(charges.map((c) => c.id).sort());
    // The ledger keeps where each cost went, for reconciliation.
    for (const c of charges) expect(c.metadata).toMatchObject({ langfuseTraceId: rootId, rootRunId: rootId });
  });

  it('without Langfuse credentials: config metadata reaches the trace, admission fields reach every child observation', async () => {
    const h = billing({ langfuse: undefined });
    const lf = lfHandler();
    await flow().invoke('hi', billingRunConfig(h, { callbacks: [lf] }));
    await lf.shutdownAsync();
    const rootId = h.runs[0]!.rootRunId;
    const view = await langfuse.waitFor(() => {
      const v = langfuse.traces().get(rootId);
      return v && v.observations.some((o) => o.type === 'GENERATION' && o.usageDetails) ? v : undefined;
    });
    // Static fields come from the RunnableConfig metadata that billingRunConfig() set.
    // (The rate-card version is static only when the handler was given `rateCard`; otherwise it is read from the ledger at the root start.)
    expect(view.trace.metadata).toMatchObject({ [K.customerId]: customerId, [K.conversationId]: 'chat-42', [K.costCenter]: 'cc-7', [K.usageCategory]: 'support-bot' });
    // Fields known only after admission (an await) are put on each child run's metadata by the handler,
    // synchronously before the next handler reads it, so every child observation carries them.
    const children = view.observations.filter((o) => o.id !== rootId);
    expect(children.length).toBeGreaterThanOrEqual(4);
    for (const o of children) expect(o.metadata).toMatchObject({ [K.customerId]: customerId, [K.planTier]: 'professional', [K.quotaRemaining]: 9990, [K.rateCardVersion]: '2026-12-default' });
    // No cost without credentials: langfuse-langchain never sends costDetails.
    expect(view.observations.every((o) => !o.costDetails)).toBe(true);
  });

  it('concurrent runs on one billing handler: each trace gets exactly its own costs', async () => {
    const h = billing({ gate: undefined });
    const results = await Promise.all(Array.from({ length: 5 }, (_, i) => flow().invoke(`question ${i}`, billingRunConfig(h))));
    expect(results).toHaveLength(5);
    await h.flushLangfuse(5000);
    const charges = await ledgerCharges();
    for (const run of h.runs) {
      const view = await langfuse.waitFor(() => {
        const v = langfuse.traces().get(run.rootRunId);
        return v && v.observations.filter((o) => o.costDetails).length === 4 ? v : undefined;
      });
      const lfTotal = view.observations.reduce((a, o) => a + nanosOf(o.costDetails?.total ?? 0), 0n);
      const own = charges.filter((c) => c.metadata.rootRunId === run.rootRunId).reduce((a, c) => a + c.amount, 0n);
      expect(lfTotal).toBe(own);
      expect(run.cost).toBe(own);
    }
  });

  it('a handler on the model inside someone else’s traced chain: the run fee and compute land on the call’s generation (trace sum = ledger)', async () => {
    const h = billing({ gate: undefined });
    const lf = lfHandler();
    const m = model();
    m.callbacks = [h];
    const chain = ChatPromptTemplate.fromMessages([['human', '{q}']]).pipe(m).pipe(new StringOutputParser());
    await chain.invoke({ q: 'nested billing' }, { callbacks: [lf], runName: 'outer' });
    await Promise.all([lf.shutdownAsync(), h.flushLangfuse(5000)]);
    const charges = await ledgerCharges();
    expect(charges.map((c) => c.chargeType).sort()).toEqual(['PrivateFlowRun', 'compute', 'tokens:gpt-4o-mini']);
    const run = h.runs[0]!;
    const gen = await langfuse.waitFor(() => {
      const o = langfuse.observations().get(run.rootRunId);
      return o && o.costDetails && nanosOf(o.costDetails.total ?? 0) === run.cost ? o : undefined;
    });
    const trace = langfuse.traces().get(gen.traceId!)!;
    const lfTotal = trace.observations.reduce((a, o) => a + nanosOf(o.costDetails?.total ?? 0), 0n);
    expect(lfTotal).toBe(charges.reduce((a, c) => a + c.amount, 0n));
  });

  it('a handler on a chain inside someone else’s traced chain: its fee, compute and tool costs ride on its first generation (trace sum = ledger)', async () => {
    const h = billing({ gate: undefined });
    const lf = lfHandler();
    // The billed part: prompt → model → parser, then a priced tool; its handler sees neither the outer chain nor the trace.
    const inner = flow().withConfig({ callbacks: [h] });
    const outer = RunnableLambda.from(async (q: string, config) => inner.invoke(q, config)).withConfig({ runName: 'outer' });
    await outer.invoke('nested chain', { callbacks: [lf] });
    expect(await h.flushLangfuse(5000)).toBe(true);
    await lf.shutdownAsync();
    const charges = await ledgerCharges();
    expect(charges.map((c) => c.chargeType).sort()).toEqual(['Inference', 'PrivateFlowRun', 'compute', 'tokens:gpt-4o-mini']);
    const ledgerTotal = charges.reduce((a, c) => a + c.amount, 0n);
    expect(h.runs[0]!.cost).toBe(ledgerTotal);
    const view = await langfuse.waitFor(() => [...langfuse.traces().values()].find((v) => v.trace.name === 'outer' && v.observations.some((o) => o.costDetails)));
    const lfTotal = view.observations.reduce((a, o) => a + nanosOf(o.costDetails?.total ?? 0), 0n);
    expect(lfTotal).toBe(ledgerTotal);
    const generation = view.observations.find((o) => o.costDetails)!;
    expect(String(generation.metadata[K.chargeIds]).split(',').sort()).toEqual(charges.map((c) => c.id).sort());
  });

  it('the Langfuse secret key never shows: not when the handler, its run config or its reporter is logged, not in a delivery failure', async () => {
    const secret = langfuse.secretKey;
    const h = billing({ gate: undefined });
    const shown = [inspect(h, { depth: 20 }), inspect(billingRunConfig(h), { depth: 20 }), inspect(langfuseReporterFor({ publicKey: langfuse.publicKey, secretKey: secret, baseUrl: langfuse.baseUrl }), { depth: 20 }), JSON.stringify(h)];
    for (const text of shown) expect(text).not.toContain(secret);
    expect(shown[0]).toContain(customerId);
    // A refused delivery (the SDK's flushAsync printed it with the response body) is not printed; if anything is, without the key (nor its Basic-auth form).
    const logged: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void logged.push(a.map((x) => inspect(x, { depth: 20 })).join(' ')));
    try {
      langfuse.setMode('error500');
      // Its own SDK client that sends on flush (the SDK logs the failure of the request a flush makes).
      const quiet = billing({ gate: undefined, langfuse: { publicKey: 'pk-lf-logged', secretKey: secret, baseUrl: langfuse.baseUrl, flushAt: 100, fetchRetryCount: 0 } });
      await flow().invoke('logged', billingRunConfig(quiet));
      expect(await quiet.flushLangfuse(3000)).toBe(false);
    } finally {
      spy.mockRestore();
    }
    const basic = Buffer.from(`pk-lf-logged:${secret}`).toString('base64');
    for (const line of logged) expect(line).not.toMatch(new RegExp(`${secret}|${basic}`));
  });

  it('the SDK’s retried and refused deliveries (real SDK, loopback Langfuse failing) put the secret nowhere: not in its retry events, not on the console, not in what the handler shows or reports', async () => {
    const secret = langfuse.secretKey;
    for (const mode of ['error500', 'echo500'] as const) {
      langfuse.reset();
      langfuse.setMode(mode);
      const publicKey = `pk-lf-retry-${mode}`;
      const basic = Buffer.from(`${publicKey}:${secret}`).toString('base64');
      const leaks = (text: string) => text.includes(secret) || text.includes(basic);
      const creds = { publicKey, secretKey: secret, baseUrl: langfuse.baseUrl, flushAt: 100, fetchRetryCount: 1 };
      const reported: string[] = [];
      const h = billing({ gate: undefined, langfuse: creds, onError: (e, ctx) => void reported.push(inspect([e, ctx], { depth: 20 })) });
      // Every event the SDK client emits ('retry' carries the request's options), as its debug mode would print them.
      const sdkEvents: string[] = [];
      const client = (langfuseReporterFor(creds) as unknown as { client: { on(e: string, cb: (...a: unknown[]) => void): void } }).client;
      client.on('*', (event: unknown, payload: unknown) => void sdkEvents.push(`${String(event)} ${typeof payload === 'string' ? payload : inspect(payload, { depth: 20 })}`));
      const printed: string[] = [];
      const spies = [
        ...(['log', 'info', 'warn', 'error', 'debug'] as const).map((m) => vi.spyOn(console, m).mockImplementation((...a: unknown[]) => void printed.push(a.map((x) => inspect(x, { depth: 20 })).join(' ')))),
        vi.spyOn(process.stdout, 'write').mockImplementation((chunk: unknown) => (printed.push(String(chunk)), true)),
        vi.spyOn(process.stderr, 'write').mockImplementation((chunk: unknown) => (printed.push(String(chunk)), true)),
      ];
      let delivered: boolean;
      try {
        await flow().invoke('retried', billingRunConfig(h));
        delivered = await h.flushLangfuse(5000);
      } finally {
        for (const spy of spies) spy.mockRestore();
      }
      expect(delivered, mode).toBe(false);
      // The SDK did retry (the event that carried the Basic-auth header), and the server did get the credentials.
      expect(sdkEvents.filter((e) => e.startsWith('retry ')).length, mode).toBeGreaterThan(0);
      const ingestion = langfuse.requests.filter((r) => r.path === '/api/public/ingestion');
      expect(ingestion.length, mode).toBe(2);
      for (const r of ingestion) expect(r.headers.authorization, mode).toBe(`Basic ${basic}`);
      // (Its 'warning' event carries the failed request's Error, the response body included: behind a reflecting
      // gateway that body has the header, as the server sent it. The reporter only counts it; nothing prints it.)
      const retries = sdkEvents.filter((e) => !e.startsWith('warning '));
      for (const text of [...retries, ...printed, ...reported]) expect(leaks(text), `${mode}: ${text.slice(0, 200)}`).toBe(false);
      // What the handler shows of itself and of its options, and what it reported.
      for (const text of [inspect(h, { depth: 20 }), inspect(h.options, { depth: 20 }), JSON.stringify(h.options.langfuse), inspect(h.failures, { depth: 20 }), inspect(h.charges, { depth: 20 }), inspect(h.runs, { depth: 20 })]) {
        expect(leaks(text), mode).toBe(false);
      }
      // Sealed for showing only: the handler still has the key (the deliveries above carried it).
      expect(h.options.langfuse?.secretKey).toBe(secret);
      expect((await ledgerCharges()).length).toBeGreaterThan(0);
    }
  });

  it('a Flowise run shows neither its Langfuse secret nor its ledger database URL', async () => {
    const run = await openFlowRun({
      ledgerDatabase: 'postgres://billing:pg-password-7@127.0.0.1:1/ledger', customerId, conversationId: 'chat-9', runKey: `flow:lf:${randomUUID()}`,
      actor: 'node:test', runFee: null, checkSessions: false, langfuse: { publicKey: 'pk-lf-flow', secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl },
    });
    for (const text of [inspect(run, { depth: 20 }), JSON.stringify(run)]) {
      expect(text).not.toContain(langfuse.secretKey);
      expect(text).not.toContain('pg-password-7');
      expect(text).toContain(customerId);
    }
  });

  it('two handlers with the same Langfuse keys but other delivery settings each get their settings', async () => {
    // billing() sends every event at once (flushAt 1); this one batches 100 events, flushed every 10 minutes.
    await flow().invoke('first', billingRunConfig(billing({ gate: undefined })));
    const batched = billing({ gate: undefined, langfuse: { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushAt: 100, flushIntervalMs: 600_000 } });
    await flow().invoke('second', billingRunConfig(batched));
    const rootId = batched.runs[0]!.rootRunId;
    await new Promise((r) => setTimeout(r, 300));
    expect(langfuse.traces().get(rootId)?.observations.some((o) => o.costDetails) ?? false).toBe(false);
    expect(await batched.flushLangfuse(5000)).toBe(true);
    expect(langfuse.traces().get(rootId)!.observations.filter((o) => o.costDetails)).toHaveLength(4);
  });

  it('flushLangfuse() resolves true only when every cost has reached Langfuse, and false (on time) when Langfuse is down or refusing', async () => {
    // The SDK's defaults: 20 events a request, background flushes; 8 runs make 40 events (4 costs + 1 trace each).
    const creds = { publicKey: langfuse.publicKey, secretKey: langfuse.secretKey, baseUrl: langfuse.baseUrl, flushIntervalMs: 600_000 };
    const h = billing({ gate: undefined, langfuse: creds });
    await Promise.all(Array.from({ length: 8 }, (_, i) => flow().invoke(`question ${i}`, billingRunConfig(h))));
    expect(await h.flushLangfuse(5000)).toBe(true);
    // Right after the flush (a script would exit now): every charge is on its trace.
    const charges = await ledgerCharges();
    expect(charges).toHaveLength(32);
    const costs = [...langfuse.observations().values()].filter((o) => o.costDetails);
    expect(costs.map((o) => o.metadata.billing_charge_id).sort()).toEqual(charges.map((c) => c.id).sort());
    for (const run of h.runs) expect(langfuse.traces().get(run.rootRunId)?.trace.metadata[K.runCostUsd]).toBe(formatUsd(run.cost));

    for (const mode of ['down', 'error500'] as const) {
      langfuse.setMode(mode);
      // Another project key: its own SDK client, without retries so that the answer comes at once.
      const down = billing({ gate: undefined, langfuse: { ...creds, publicKey: `pk-lf-${mode}`, fetchRetryCount: 0 } });
      await flow().invoke('while Langfuse is away', billingRunConfig(down));
      const t0 = performance.now();
      expect(await down.flushLangfuse(3000), mode).toBe(false);
      expect(performance.now() - t0).toBeLessThan(3500);
    }
  });

  for (const mode of ['down', 'error500', 'slow'] as const) {
    it(`Langfuse ${mode}: runs succeed, are charged, and are not slowed`, async () => {
      langfuse.setMode(mode);
      const h = billing();
      const lf = lfHandler();
      const t0 = performance.now();
      const out = await flow().invoke('hello', billingRunConfig(h, { callbacks: [lf] }));
      const runMs = performance.now() - t0;
      expect(out).toBe('echo: hello / found hello');
      // The SDK's request timeout is 3-5 s and its retries seconds apart: a run that waited on Langfuse would take seconds.
      expect(runMs).toBeLessThan(1000);
      const charges = await ledgerCharges();
      expect(charges).toHaveLength(4);
      expect(h.failures).toHaveLength(0);
      expect((await ledger.checkInvariants()).ok).toBe(true);
      // A bounded flush returns on time even though nothing can be delivered.
      const t1 = performance.now();
      await h.flushLangfuse(300);
      expect(performance.now() - t1).toBeLessThan(1000);
      void lf.shutdownAsync().catch(() => undefined);
    });
  }
});
