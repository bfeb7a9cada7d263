import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeListChatModel } from '@langchain/core/utils/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeClass as BillingGate } from '../nodes/BillingGate/BillingGate';
import { nodeClass as Charge } from '../nodes/Charge/Charge';
import { nodeClass as MeteredChatModel } from '../nodes/MeteredChatModel/MeteredChatModel';
import { nodeClass as MeteredTool } from '../nodes/MeteredTool/MeteredTool';
import { predictionRun, runSchema } from '../nodes/shared/prediction-run';
import { z } from '../src/plugin';
import { nodeClass as QuotaGuard } from '../nodes/QuotaGuard/QuotaGuard';
import { nodeClass as UsageTool } from '../nodes/UsageTool/UsageTool';
import { credClass as BillingLedgerCredential } from '../credentials/BillingLedger.credential';
import { credClass as StripeBillingCredential } from '../credentials/StripeBilling.credential';
import { flowise } from '../nodes/shared/flowise';
import { signBillingToken } from '../src/identity';
import { formatUsd, parseUsd } from '../src/money';
import { closeSharedLedgers, DEFAULT_REFUSAL_MESSAGES, sharedLedger, type LedgerHandle } from '../src/plugin';

const SECRET = 'unit-test-billing-secret-0123456789abcdef';
let dir: string;
let dbPath: string;
let h: LedgerHandle;
const quiet = { warn: () => undefined, error: () => undefined };

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-nodes-'));
  dbPath = path.join(dir, 'billing.sqlite');
  flowise.getCredentialData = async (id: string) => (id === 'cred-1' ? { ledgerDatabase: dbPath, billingTokenSecret: SECRET } : {});
  h = await sharedLedger(dbPath);
  for (const [id, usd] of [['alice', '1'], ['bob', '0.015'], ['carol', '1']] as const) {
    await h.ledger.createCustomer({ id });
    await h.ledger.topUp({ customerId: id, amount: parseUsd(usd), idempotencyKey: `t-${id}` });
  }
});
afterAll(async () => {
  await closeSharedLedgers();
  fs.rmSync(dir, { recursive: true, force: true });
});

const tokenVars = (customerId: string, secret = SECRET) => ({ vars: { billingToken: signBillingToken(secret, customerId) } });
const nodeData = (inputs: Record<string, unknown>, id = 'node_0') => ({ id, credential: 'cred-1', inputs });

describe('node definitions', () => {
  it('have stable names, versions, own icons, no author, and the categories Flowise shows', () => {
    const nodes = [new QuotaGuard(), new MeteredChatModel(), new UsageTool(), new BillingGate(), new Charge()];
    for (const n of nodes) {
      expect(n.name).toMatch(/^[a-z][A-Za-z]+$/);
      expect(n.version).toBeGreaterThan(0);
      expect(n.icon).toMatch(/\.svg$/);
      expect('author' in n).toBe(false);
      expect(n.credential?.credentialNames).toEqual(['billingLedger']);
    }
    expect(nodes.map((n) => n.category)).toEqual(['Billing', 'Billing', 'Billing', 'Agent Flows', 'Agent Flows']);
    expect(new QuotaGuard().baseClasses).toEqual(['Moderation']);
  });

  it("Billing Gate's and Charge's On Refusal input says what its choices do: the same since a refusal never throws (it promised that 'stop' stops and 'state' lets the flow continue)", () => {
    for (const n of [new BillingGate(), new Charge()]) {
      const input = n.inputs.find((i) => i.name === 'onRefusal') as { description?: string; options?: Array<{ name: string; description?: string }> };
      expect(input.description).toMatch(/Either way the refusal is this node’s content and is written to flow state/);
      expect(input.options?.find((o) => o.name === 'state')?.description).toMatch(/The same as "Answer with the message"/);
    }
  });

  it('credentials keep secrets in password fields', () => {
    const ledger = new BillingLedgerCredential();
    expect(ledger.name).toBe('billingLedger');
    expect(ledger.inputs.map((i) => [i.name, i.type])).toEqual([
      ['ledgerDatabase', 'password'],
      ['billingTokenSecret', 'password'],
    ]);
    expect(new StripeBillingCredential().inputs.every((i) => i.type === 'password')).toBe(true);
    // Nothing in the nodes reads it (the Stripe sync is the CLI's and serve's, from the environment): its description must not promise otherwise.
    expect(new StripeBillingCredential().description).toMatch(/no flowise-billing node reads this credential.*STRIPE_SECRET_KEY/);
  });
});

describe('Quota Guard', () => {
  it('names a bad input and a missing credential', async () => {
    await expect(new QuotaGuard().init(nodeData({ runFee: 'Bogus' }), '', {})).rejects.toThrow(/Quota Guard: input "Run Fee" \(runFee\): must be one of/);
    await expect(new QuotaGuard().init(nodeData({ minimumBalanceUsd: '1e3' }), '', {})).rejects.toThrow(/input "Minimum Balance \(USD\)" \(minimumBalanceUsd\)/);
    // Over the ledger's largest amount: named here (it passed, then refused every run as "Billing is temporarily unavailable").
    await expect(new QuotaGuard().init(nodeData({ minimumBalanceUsd: '99999999999999999999' }), '', {})).rejects.toThrow(/input "Minimum Balance \(USD\)" \(minimumBalanceUsd\): Minimum Balance must be at most \$1000000000\.00/);
    await expect(new QuotaGuard().init({ id: 'q', inputs: {} }, '', {})).rejects.toThrow(/select a Billing Ledger credential/);
  });

  it('checks a verified customer without charging: the prediction’s metered model takes the fee with its first call; refuses others with the operator message', async () => {
    const before = (await h.ledger.balance('alice')).balance;
    const o = { chatId: 'c-1', chatflowid: 'f', logger: quiet };
    const runner = await new QuotaGuard().init(nodeData(tokenVars('alice')), 'hi', o);
    expect(await runner.checkForViolations('hi')).toBe('hi');
    expect((await h.ledger.balance('alice')).balance).toBe(before);
    const usage = await h.quota.usage('alice');
    expect(usage.sessionsUsed).toBe(1);
    // The same prediction's metered model joins the guard's run. alice's free plan has no managed models, so its
    // first call is refused (bring your own key): the answer is the message, and the guard's fee is not charged.
    const model = (await new MeteredChatModel().init(nodeData({ model: new FakeListChatModel({ responses: ['not produced'] }), ...tokenVars('alice') }, 'm_0'), 'hi', o)) as FakeListChatModel;
    expect((await model.invoke('hi')).content).toBe(DEFAULT_REFUSAL_MESSAGES.byokRequired);
    expect((await h.ledger.balance('alice')).balance).toBe(before);
    expect((await h.ledger.statement('alice')).filter((e) => e.type === 'settle' || e.type === 'charge')).toEqual([]);

    const forged = await new QuotaGuard().init(nodeData(tokenVars('alice', 'x'.repeat(40))), '', { chatId: 'c-2', logger: quiet });
    await expect(forged.checkForViolations('hi')).rejects.toThrow(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    const unknown = await new QuotaGuard().init(nodeData(tokenVars('nobody')), '', { chatId: 'c-3', logger: quiet });
    await expect(unknown.checkForViolations('hi')).rejects.toThrow(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    const custom = await new QuotaGuard().init(nodeData({ ...tokenVars('bob'), minimumBalanceUsd: '0.01', insufficientFundsMessage: 'Top up at example.com' }), '', {
      chatId: 'c-4',
      logger: quiet,
    });
    await expect(custom.checkForViolations('hi')).rejects.toThrow(/^Top up at example\.com$/);
    expect(formatUsd((await h.ledger.balance('bob')).balance)).toBe('0.015');
  });
});

describe('the Billing Ledger credential of a prediction', () => {
  it('is read once for the nodes of one prediction, again for the next, and a failed read is not kept', async () => {
    const real = flowise.getCredentialData;
    let reads = 0;
    let data: Record<string, unknown> | null = { ledgerDatabase: dbPath, billingTokenSecret: SECRET };
    flowise.getCredentialData = async () => {
      reads++;
      if (!data) throw new Error('database down');
      return data;
    };
    try {
      const o = { chatId: 'cred-1', chatflowid: 'f', logger: quiet };
      const guard = await new QuotaGuard().init(nodeData(tokenVars('carol')), 'first', o);
      await new MeteredChatModel().init(nodeData({ model: new FakeListChatModel({ responses: ['ok'] }), ...tokenVars('carol') }, 'm_0'), 'first', o);
      expect(await guard.checkForViolations('first')).toBe('first');
      expect(reads).toBe(1);
      // The next prediction (another question, another conversation) reads it again: an edited credential applies to it.
      data = { ledgerDatabase: dbPath, billingTokenSecret: 'y'.repeat(40) };
      const next = await new QuotaGuard().init(nodeData(tokenVars('carol')), 'second', { ...o, chatId: 'cred-2' });
      expect(reads).toBe(2);
      await expect(next.checkForViolations('second')).rejects.toThrow(DEFAULT_REFUSAL_MESSAGES.unauthorized);
      data = null;
      await expect(new QuotaGuard().init(nodeData(tokenVars('carol')), 'third', { ...o, chatId: 'cred-3' })).rejects.toThrow(/database down/);
      data = { ledgerDatabase: dbPath, billingTokenSecret: SECRET };
      const retried = await new QuotaGuard().init(nodeData(tokenVars('carol')), 'third', { ...o, chatId: 'cred-3' });
      expect(reads).toBe(4);
      expect(await retried.checkForViolations('third')).toBe('third');
    } finally {
      flowise.getCredentialData = real;
    }
  });
});

describe('a Billing Ledger credential with a bad Ledger Database', () => {
  it('fails the node with VALIDATION_ERROR naming the field, never the password, and opens nothing', async () => {
    const real = flowise.getCredentialData;
    const cwd = process.cwd();
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-badcred-'));
    process.chdir(tmp);
    try {
      for (const ledgerDatabase of ['mysql://u:SuperSecretPw@h/db', 'postgres://u:SuperSecretPw@[bad/db']) {
        flowise.getCredentialData = async () => ({ ledgerDatabase, billingTokenSecret: SECRET });
        const o = { chatId: `bad-${ledgerDatabase.length}`, chatflowid: 'f', apiMessageId: `m-${ledgerDatabase.length}`, logger: quiet };
        const e = await new BillingGate().run(nodeData({ customerSource: 'fixed', fixedCustomerId: 'alice' }), 'q', o).then(() => null, (err: unknown) => err as Error & { code?: string; details?: unknown });
        expect(e?.code).toBe('VALIDATION_ERROR');
        expect(e?.message).toMatch(/^Billing Gate: the Billing Ledger credential's Ledger Database: /);
        expect(e?.details).toEqual({ field: 'ledgerDatabase' });
        expect(JSON.stringify({ m: e?.message, d: e?.details })).not.toContain('SuperSecretPw');
      }
      expect(fs.readdirSync(tmp)).toEqual([]);
    } finally {
      process.chdir(cwd);
      flowise.getCredentialData = real;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});

describe('customer identity settings', () => {
  it('a Fixed customer source without a valid Fixed Customer ID, or a bad variable name, fails the node naming the input (it answered every user "Billing is temporarily unavailable")', async () => {
    const o = { chatId: 'ident-1', chatflowid: 'f', apiMessageId: 'ident-m', logger: quiet };
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ customerSource: 'fixed' }, /input "Fixed Customer ID" \(fixedCustomerId\): is required when Customer Source is "Fixed customer"/],
      [{ customerSource: 'fixed', fixedCustomerId: '   ' }, /input "Fixed Customer ID" \(fixedCustomerId\): is required/],
      [{ customerSource: 'fixed', fixedCustomerId: 'bad id' }, /input "Fixed Customer ID" \(fixedCustomerId\): customer id must be 1–128 characters: letters, digits and \. _ : @ \+ - \(starting with a letter or digit\)/],
      [{ tokenVariable: 'billing-token' }, /input "Billing Token Variable" \(tokenVariable\): must be a variable name/],
      [{ customerSource: 'insecureRawId', rawIdVariable: '1x' }, /input "Unsigned ID Variable" \(rawIdVariable\): must be a variable name/],
    ];
    const before = await h.ledger.balance('alice');
    for (const [inputs, message] of cases) {
      for (const run of [() => new BillingGate().run(nodeData(inputs), 'q', o), () => new QuotaGuard().init(nodeData(inputs), 'q', o)]) {
        const e = await run().then(() => null, (err: unknown) => err as Error & { code?: string });
        expect(e?.code).toBe('VALIDATION_ERROR');
        expect(e?.message).toMatch(message);
      }
    }
    expect(await h.ledger.balance('alice')).toEqual(before);
    // The fields of another source are not looked at (a leftover value does not break a working flow).
    const ok = await new BillingGate().run(nodeData({ customerSource: 'fixed', fixedCustomerId: 'alice', checkSessions: false, tokenVariable: 'billing-token', rawIdVariable: '1x' }), 'q', { ...o, apiMessageId: 'ident-ok' });
    expect(ok.output.billing).toMatchObject({ allowed: true, customerId: 'alice' });
  });

  it('a billing token secret shorter than 32 bytes fails the node naming the credential field, not the secret', async () => {
    const real = flowise.getCredentialData;
    flowise.getCredentialData = async () => ({ ledgerDatabase: dbPath, billingTokenSecret: 'short-secret-123' });
    try {
      const e = await new BillingGate().run(nodeData(tokenVars('alice')), 'q', { chatId: 'ident-2', apiMessageId: 'ident-m2', logger: quiet }).then(() => null, (err: unknown) => err as Error & { code?: string; details?: unknown });
      expect(e?.code).toBe('VALIDATION_ERROR');
      expect(e?.message).toMatch(/Billing Token Secret .*at least 32 bytes/);
      expect(e?.details).toEqual({ field: 'billingTokenSecret' });
      expect(e?.message).not.toContain('short-secret-123');
      // A node that takes its customer from elsewhere does not use the secret: it runs.
      const fixed = await new BillingGate().run(nodeData({ customerSource: 'fixed', fixedCustomerId: 'alice', checkSessions: false }), 'q', { chatId: 'ident-2b', apiMessageId: 'ident-m2b', logger: quiet });
      expect(fixed.output.billing).toMatchObject({ allowed: true });
    } finally {
      flowise.getCredentialData = real;
    }
  });

  it("an unresolved customer is logged with the reason (the log said only the code)", async () => {
    const lines: string[] = [];
    const logger = { warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
    const r = await new BillingGate().run({ ...nodeData({}), name: 'billingGateAgentflow' }, 'q', { chatId: 'ident-3', apiMessageId: 'ident-m3', workspaceId: 'ws', logger });
    expect(r.output.billing).toMatchObject({ allowed: false, refusal: 'unauthorized' });
    expect(lines.join('\n')).toMatch(/customer not resolved \(UNAUTHORIZED: Billing token refused: no billing token was sent/);
  });
});

describe('a node missing what it wraps or its ledger', () => {
  it('fails with VALIDATION_ERROR naming the input (it was a plain Error without a code)', async () => {
    const o = { chatId: 'miss-1', chatflowid: 'f', logger: quiet };
    const cases: Array<[() => Promise<unknown>, RegExp, string]> = [
      [() => new MeteredChatModel().init(nodeData({ customerSource: 'fixed', fixedCustomerId: 'alice' }), 'q', o), /^Metered Chat Model: connect a chat model to input "Chat Model"$/, 'model'],
      [() => new MeteredTool().init(nodeData({ customerSource: 'fixed', fixedCustomerId: 'alice' }), 'q', o), /^Metered Tool: connect a tool to input "Tool"$/, 'tool'],
      [() => predictionRun({ label: 'OpenAI (metered)', name: 'chatOpenAIMetered' }, z.object(runSchema).parse({}), nodeData({}), o, 'q', quiet), /select a Billing Ledger credential \(input "Billing Ledger"\)/, 'billingLedgerCredential'],
    ];
    for (const [run, message, field] of cases) {
      const e = await run().then(() => null, (err: unknown) => err as Error & { code?: string; details?: unknown });
      expect(e?.message).toMatch(message);
      expect(e?.code).toBe('VALIDATION_ERROR');
      expect(e?.details).toEqual({ field });
    }
  });

  it('Max Output Tokens Held: blank or whitespace is the default, anything else but a whole number from 1 to 10000000 is named in words (it said "Expected number, received nan")', async () => {
    const o = { chatId: 'cap-1', chatflowid: 'f', logger: quiet };
    const init = (cap: unknown) => new MeteredChatModel().init(nodeData({ model: new FakeListChatModel({ responses: ['ok'] }), customerSource: 'fixed', fixedCustomerId: 'alice', maxOutputTokensCap: cap }), 'q', o);
    await expect(init('  ')).resolves.toBeTruthy();
    for (const cap of ['abc', 'NaN', '-1', '1.5', '1e9', 0]) {
      await expect(init(cap)).rejects.toThrow(/input "Max Output Tokens Held" \(maxOutputTokensCap\): must be a whole number from 1 to 10000000$/);
    }
  });

  it("Metered Chat Model's and Metered Tool's own message is labelled for what it answers: an unidentified customer", () => {
    for (const n of [new MeteredChatModel(), new MeteredTool()]) {
      const input = n.inputs.find((i) => i.name === 'refusalMessage');
      expect(input?.label).toBe('Unauthorized Message');
      expect(input?.description).toMatch(/Other refusals .* Quota Guard/);
    }
  });
});

describe('Metered Chat Model', () => {
  it('meters the model instance in the prediction’s run; a refused customer gets the operator’s message as the answer and never reaches the model', async () => {
    const model = new FakeListChatModel({ responses: ['ok'] });
    const out = (await new MeteredChatModel().init(nodeData({ model, ...tokenVars('carol') }), 'q', { chatId: 'm-1', logger: quiet })) as FakeListChatModel;
    expect(out).toBe(model);
    await new MeteredChatModel().init(nodeData({ model, ...tokenVars('carol') }), 'q', { chatId: 'm-1', logger: quiet }); // metered once
    const before = (await h.ledger.balance('carol')).balance;
    expect((await out.invoke('hello')).content).toBe('ok');
    const spent = before - (await h.ledger.balance('carol')).balance;
    expect(spent).toBeGreaterThan(0n);

    const guarded = new FakeListChatModel({ responses: ['should not be produced'] });
    await new MeteredChatModel().init(nodeData({ model: guarded, vars: { billingToken: 'forged' } }), 'q', { chatId: 'm-2', logger: quiet });
    expect((await guarded.invoke('hello')).content).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    // Asked as Flowise's Condition Agent asks (it throws on anything but a JSON scenario answer): the refusal is a scenario answer.
    const asked = `{"input": hello, "scenarios": ["billing question","anything else"], "instruction": route}`;
    const routed = (await guarded.invoke([['human', asked]])).content as string;
    expect(JSON.parse(routed.replace(/^```json\n|\n```$/g, ''))).toEqual({ output: DEFAULT_REFUSAL_MESSAGES.unauthorized });
    await expect(new MeteredChatModel().init(nodeData({ ...tokenVars('carol') }), '', {})).rejects.toThrow(/connect a chat model/);
  });
});

describe('Billing Gate and Charge (agentflow v2)', () => {
  const opts = (apiMessageId: string, extra: Record<string, unknown> = {}) => ({
    chatId: 'af-1',
    chatflowid: 'agentflow-1',
    apiMessageId,
    logger: quiet,
    agentflowRuntime: { state: { keep: 1 }, chatHistory: [{ role: 'user', content: 'q' }, { role: 'assistant', content: 'the answer' }] },
    ...extra,
  });

  it('Billing Gate checks without charging (the fee goes with the first paid step), and a refusal is an answer: never thrown, sticky for the steps after it', async () => {
    const before = (await h.ledger.balance('carol')).balance;
    const gate = new BillingGate();
    const r1 = await gate.run(nodeData(tokenVars('carol'), 'billingGateAgentflow_0'), 'q', opts('msg-1'));
    expect(r1.output.billing).toMatchObject({ allowed: true, customerId: 'carol' });
    expect(r1.state).toEqual({ keep: 1, billingRefused: false, billingRefusal: '', billingMessage: '' });
    expect((await h.ledger.balance('carol')).balance).toBe(before);
    // The execution's Charge is its first paid step: the gate's fee is reserved and paid with it.
    const c1 = await new Charge().run(nodeData({ ...tokenVars('carol'), chargeType: 'ObjectGenerator', quantity: '16' }, 'chargeAgentflow_0'), 'q', opts('msg-1'));
    expect(c1.output.billing).toMatchObject({ charged: true, amountUsd: '0.0004' });
    expect(before - (await h.ledger.balance('carol')).balance).toBe(parseUsd('0.0104'));

    const hard = await gate.run(nodeData({ vars: { billingToken: 'nope' } }, 'g'), 'q', opts('msg-2'));
    expect(hard.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    expect(hard.state).toMatchObject({ billingRefused: true, billingRefusal: 'unauthorized' });
    const soft = await gate.run(nodeData({ vars: {}, onRefusal: 'state' }, 'g'), 'q', opts('msg-3'));
    expect(soft.state).toMatchObject({ keep: 1, billingRefused: true, billingRefusal: 'unauthorized' });
    expect(soft.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
    // bob cannot cover fee + minimum: refused by the gate, and the Charge after it in that execution charges nothing.
    const poor = await gate.run(nodeData({ ...tokenVars('bob'), minimumBalanceUsd: '0.01' }, 'billingGateAgentflow_0'), 'q', opts('msg-4'));
    expect(poor.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    const after = await new Charge().run(nodeData({ ...tokenVars('bob'), chargeType: 'ObjectGenerator', quantity: '1' }, 'chargeAgentflow_0'), 'q', opts('msg-4'));
    expect(after.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(formatUsd((await h.ledger.balance('bob')).balance)).toBe('0.015');
  });

  it('Charge prices the quantity (from an earlier node) once per execution and node, and passes the reply on', async () => {
    const before = (await h.ledger.balance('carol')).balance;
    const charge = new Charge();
    const inputs = { ...tokenVars('carol'), chargeType: 'ObjectGenerator', quantity: '16' };
    const r = await charge.run(nodeData(inputs, 'chargeAgentflow_0'), 'q', opts('msg-9'));
    await charge.run(nodeData(inputs, 'chargeAgentflow_0'), 'q', opts('msg-9'));
    expect(r.output.content).toBe('the answer');
    expect(r.output.billing).toMatchObject({ charged: true, item: 'ObjectGenerator', quantity: '16', amountUsd: '0.0004' });
    expect(before - (await h.ledger.balance('carol')).balance).toBe(parseUsd('0.0004'));
    await charge.run(nodeData(inputs, 'chargeAgentflow_0'), 'q', opts('msg-10'));
    expect(before - (await h.ledger.balance('carol')).balance).toBe(parseUsd('0.0008'));

    await expect(charge.run(nodeData({ ...inputs, quantity: '{{ llmAgentflow_0.output.usageMetadata.total_tokens }}' }, 'c'), 'q', opts('m'))).rejects.toThrow(
      /Charge: input "Quantity" \(quantity\): must resolve to a non-negative number/,
    );
    const refused = await charge.run(nodeData({ ...tokenVars('bob'), chargeType: 'Training', quantity: '100' }, 'c'), 'q', opts('m-bob'));
    expect(refused.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(refused.output.billing).toMatchObject({ charged: false, code: 'INSUFFICIENT_FUNDS' });
  });

  it("Charge with an empty Reply passes on the latest node's answer, also as Flowise's LLM node returns it by default (role user, named after the node); it answered ''", async () => {
    // Flowise 3.1.4's LLM/Agent nodes append their input and then their response, "Return Response As" User Message by default.
    const agentflowRuntime = { state: {}, chatHistory: [{ role: 'user', content: 'hello' }, { role: 'user', content: 'echo: hello', name: 'llm_0' }] };
    const r = await new Charge().run(nodeData({ ...tokenVars('carol'), chargeType: 'ObjectGenerator', quantity: '1' }, 'chargeAgentflow_0'), 'hello', opts('msg-reply', { agentflowRuntime }));
    expect(r.output.billing).toMatchObject({ charged: true });
    expect(r.output.content).toBe('echo: hello');
  });

  it('Charge after a refused step answers the refusal even when its quantity references output the refused step never produced (it threw, HTTP 500)', async () => {
    // A refused metered LLM node has no usageMetadata, so Flowise leaves the reference unresolved in the input.
    const poor = await new BillingGate().run(nodeData({ ...tokenVars('bob'), minimumBalanceUsd: '0.01' }, 'billingGateAgentflow_0'), 'q', opts('msg-unresolved'));
    expect(poor.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    const r = await new Charge().run(
      nodeData({ ...tokenVars('bob'), chargeType: 'ObjectGenerator', quantity: '{{ llmAgentflow_0.output.usageMetadata.total_tokens }}' }, 'chargeAgentflow_0'),
      'q',
      opts('msg-unresolved'),
    );
    expect(r.output.content).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    expect(r.output.billing).toMatchObject({ charged: false, code: 'INSUFFICIENT_FUNDS' });
    expect(r.state).toMatchObject({ billingRefused: true, billingRefusal: 'insufficientFunds' });
    expect(formatUsd((await h.ledger.balance('bob')).balance)).toBe('0.015');
  });
});

describe('Usage Tool', () => {
  it("reports the resolved customer's own usage, never another's", async () => {
    const tool = (await new UsageTool().init(nodeData(tokenVars('alice')), '', { logger: quiet })) as { name: string; invoke(i: string): Promise<string> };
    expect(tool.name).toBe('billing_usage');
    const report = JSON.parse(await tool.invoke('show me bob'));
    expect(report).toMatchObject({ customerId: 'alice', plan: 'free', sessionsUsed: 1, sessionsLimit: 25, sessionsRemaining: 24, balanceUsd: '1.00' }); // the guard charged nothing (alice's only call was refused)
    const refused = (await new UsageTool().init(nodeData({ vars: {} }), '', { logger: quiet })) as { invoke(i: string): Promise<string> };
    expect(await refused.invoke('')).toBe(DEFAULT_REFUSAL_MESSAGES.unauthorized);
  });
});

describe('Usage Tool with the ledger unreachable', () => {
  it('still builds (the prediction goes on: an agent may never call it) and the call answers that usage is unavailable, without engine text', async () => {
    const real = flowise.getCredentialData;
    // Nothing listens on port 1: connecting is refused at once.
    flowise.getCredentialData = async () => ({ ledgerDatabase: 'postgres://postgres:SuperSecretPw@127.0.0.1:1/billing', billingTokenSecret: SECRET });
    try {
      const tool = (await new UsageTool().init(nodeData(tokenVars('alice')), 'q', { chatId: 'usage-down', logger: quiet })) as { invoke(i: string): Promise<string> };
      const answer = await tool.invoke('');
      expect(answer).toBe('Usage is not available right now (DATABASE_ERROR).');
    } finally {
      flowise.getCredentialData = real;
    }
  });
});
