/**
 * Flowise 3.1.4 in queue mode, end to end on this machine (test/e2e/queue-env.mjs): main with
 * MODE=queue, two `flowise worker` processes, Redis (BullMQ), Flowise's database and the billing
 * ledger on a private PostgreSQL cluster this test starts (test/support/pg-cluster.ts, password auth,
 * so it can restart it and check the password never shows), the plugin
 * installed by its installer, the example metered chatflow. One topology start serves every case:
 * load across both workers, a PostgreSQL restart under load, and a worker killed mid-prediction
 * (last, since it leaves one worker).
 */
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { signBillingToken } from '../../src/identity';
import { openLedger } from '../../src/ledger/open';
import type { SqlLedger } from '../../src/ledger/sql-ledger';
import { formatUsd, type Nanos, parseUsd } from '../../src/money';
import { priceChargeType, priceTokens } from '../../src/pricing/price';
import type { RateCard } from '../../src/pricing/ratecard';
import { QuotaService } from '../../src/quota/service';
import { DEFAULT_REFUSAL_MESSAGES } from '../../src/plugin/guard';
import { expectedReply, startOpenAIServer, type OpenAIServer, type RecordedCall } from '../support/openai-server';
// @ts-expect-error plain ESM helper without types
import * as env from './flowise-env.mjs';
import { type PgCluster, pgClusterUnavailable, startPgCluster } from '../support/pg-cluster';
// @ts-expect-error plain ESM helper without types
import { createDatabase, startQueueTopology } from './queue-env.mjs';

const ROOT = path.resolve(__dirname, '..', '..');
const SECRET = 'queue-e2e-billing-token-secret-0123456789';
const HOLD_TTL_MS = 15 * 60_000; // the ledger's default: the dead worker's holds live this long

type Reply = { status: number; data: any };
type Worker = { name: string; jobs(): string[]; alive(): boolean; kill(sig?: string): void; pid: number };

const step = (() => {
  const t0 = Date.now();
  return (msg: string) => process.stdout.write(`[queue e2e +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
})();

let notHere = '';
/** A case that is skipped, with the machine's reason, when the topology cannot exist here. */
function queueCase(name: string, fn: (ctx: TestContext) => Promise<void>, timeout: number) {
  it(name, async (ctx) => {
    if (notHere) ctx.skip(notHere);
    await fn(ctx);
  }, timeout);
}

describe('Flowise 3.1.4 queue mode: main + 2 workers, Redis, PostgreSQL', () => {
  let cluster: PgCluster | undefined;
  let topo: any;
  let client: any;
  let model: OpenAIServer;
  let ledger: SqlLedger;
  let quota: QuotaService;
  let ledgerUrl = '';
  let card: RateCard;
  let flowId = '';
  const fee = () => priceChargeType(card, 'PrivateFlowRun', 1).amount;
  const callPrice = (c: RecordedCall) => {
    const u = c.response!.usage!;
    return priceTokens(card, c.body.model, u.prompt_tokens, u.completion_tokens).amount;
  };
  /** Every question carries its customer as [id], so each model call is attributed to who must pay it. */
  const callsOf = (id: string, from = 0) => model.calls.slice(from).filter((c) => JSON.stringify(c.body.messages).includes(`[${id}]`));

  const predict = (customerId: string, question: string, chatId: string): Promise<Reply> =>
    client.predict(flowId, { question: `[${customerId}] ${question}`, chatId, overrideConfig: { vars: { billingToken: signBillingToken(SECRET, customerId) } } }, { allowError: true }).catch((e: Error) => ({ status: 0, data: String(e.message) }));
  const answered = (r: Reply) => r.status === 200 && String(r.data?.text).startsWith('echo:');

  async function customer(id: string, topUpUsd: string, plan = 'starter') {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: parseUsd(topUpUsd), idempotencyKey: `queue-e2e-topup-${id}` });
    await quota.subscribe({ customerId: id, planId: plan });
  }
  async function openTestLedger() {
    ledger = await openLedger(ledgerUrl);
    quota = new QuotaService(ledger, { actor: 'queue-e2e' });
  }
  /** A run fee is taken with the first call's reservation (a settle) or, by a Charge node, as a charge. */
  const isFee = (e: { type: string; chargeType: string | null }) => (e.type === 'charge' || e.type === 'settle') && e.chargeType === 'PrivateFlowRun';
  const isCallSettle = (e: { type: string; chargeType: string | null }) => e.type === 'settle' && e.chargeType !== 'PrivateFlowRun';
  /**
   * A prediction returns its unused reservation shortly after its last call (see README, concurrency). Allowed
   * 45 s: on a loaded 2-core machine (Flowise taking 40 s to start) 15 s once was not enough; a hold left
   * to its expiry would take minutes, so this still tells a returned reservation from a forgotten one.
   */
  async function heldReturned(id: string) {
    const until = Date.now() + 45_000;
    for (;;) {
      const b = await ledger.balance(id);
      if (b.held === 0n || Date.now() > until) return b;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  /** What the customer paid must be exactly: run fees charged + every model call of theirs at the rate card. */
  async function expectExactCharges(id: string, topUpUsd: string, calls: RecordedCall[]) {
    const b = await heldReturned(id);
    const fees = (await ledger.statement(id)).filter(isFee).length;
    const owed = BigInt(fees) * fee() + calls.reduce((a, c) => a + callPrice(c), 0n);
    expect(formatUsd(parseUsd(topUpUsd) - b.balance), `${id}: charged`).toBe(formatUsd(owed));
    expect(b.balance, `${id}: overdrawn`).toBeGreaterThanOrEqual(0n);
    expect(b.held, `${id}: holds left open`).toBe(0n);
    return { fees, balance: b.balance };
  }

  beforeAll(async () => {
    const t0 = Date.now();
    // What this machine may lack (a Flowise install, PostgreSQL's server binaries, Redis) skips with the
    // reason; anything else is a failure.
    let inst;
    try {
      inst = await env.ensureFlowise({ log: step });
    } catch (e) {
      notHere = `Flowise ${env.FLOWISE_VERSION} could not be installed here: ${(e as Error).message.split('\n')[0]}`;
      return;
    }
    const noCluster = pgClusterUnavailable();
    if (noCluster) {
      notHere = `no private PostgreSQL cluster: ${noCluster}`;
      return;
    }
    cluster = await startPgCluster();
    step(`private PostgreSQL on 127.0.0.1:${cluster.port} (password auth)`);
    await createDatabase(cluster.url, 'billing');
    ledgerUrl = cluster.url.replace(/\/postgres$/, '/billing');
    await openTestLedger();
    card = await ledger.activeRateCard();
    model = await startOpenAIServer({ delayMs: 150 });
    try {
      topo = await startQueueTopology({ dir: inst.dir, pg: { host: '127.0.0.1', port: cluster.port, user: 'postgres', password: cluster.password }, ledgerUrl, workers: 2, log: step });
    } catch (e) {
      if (/Redis/.test((e as Error).message) && /not installed/.test((e as Error).message)) {
        notHere = (e as Error).message;
        return;
      }
      throw e;
    }
    client = env.api(topo.url);
    await client.setup();
    // An empty ledger database in the credential: every process uses FLOWISE_BILLING_DB, as deploy/ does.
    const ledgerCred = (await client.createCredential({ name: 'Billing ledger', credentialName: 'billingLedger', plainDataObj: { ledgerDatabase: '', billingTokenSecret: SECRET } })).id;
    const openaiCred = (await client.createCredential({ name: 'Loopback OpenAI', credentialName: 'openAIApi', plainDataObj: { openAIApiKey: 'sk-queue-e2e' } })).id;
    const flow = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'metered-conversation-chatflow.json'), 'utf8'));
    for (const n of flow.nodes) {
      const d = n.data;
      if (d.inputParams?.some((p: any) => p.type === 'credential' && p.credentialNames?.includes('billingLedger'))) d.credential = ledgerCred;
      if (d.name === 'chatOpenAI') {
        d.credential = openaiCred;
        d.inputs.basepath = model.baseURL;
      }
    }
    flowId = (await client.createChatflow({ name: 'Metered conversation (queue)', flowData: flow, type: 'CHATFLOW' })).id;
    await client.updateChatflow(flowId, { apiConfig: { overrideConfig: { status: true, nodes: {}, variables: [{ id: '', name: 'billingToken', type: 'static', enabled: true }] } } });
    step(`topology and flow ready in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
  }, 1_200_000); // a first run may install Flowise (several minutes)

  afterAll(async () => {
    await topo?.stop();
    await model?.close();
    await ledger?.close().catch(() => undefined);
    await cluster?.destroy();
  }, 120_000);

  queueCase('60 concurrent predictions over 10 customers and both workers: exact charges, no overdraft, every call paid, a free plan’s 25 sessions exact', async () => {
    const topUps: Record<string, string> = { 'q-free': '5', 'q-poor': '0.035' };
    for (let i = 1; i <= 8; i++) topUps[`q-c${i}`] = '2';
    // The Free plan allows only the customer's own key (bring your own key), which this older chatflow's
    // Metered Chat Model cannot take; the same 25-session quota on a plan with managed models tests the quota.
    await quota.createPlan({ id: 'free-managed', name: 'Free, managed models', basePriceUsd: '0', sessionsIncluded: 25, managedModels: true });
    for (const [id, usd] of Object.entries(topUps)) await customer(id, usd, id === 'q-free' ? 'free-managed' : 'starter');
    const jobsBefore = (topo.workers as Worker[]).map((w) => w.jobs().length);
    const from = model.calls.length;
    const sent: Array<{ id: string; p: Promise<Reply> }> = [];
    // The free customer opens 32 conversations (25 allowed); the others ask 3–4 questions each, in two conversations.
    for (let k = 0; k < 32; k++) sent.push({ id: 'q-free', p: predict('q-free', `question ${k}`, `q-free-conv-${k}`) });
    for (let i = 1; i <= 8; i++) for (let k = 0; k < 3; k++) sent.push({ id: `q-c${i}`, p: predict(`q-c${i}`, `question ${k}`, `q-c${i}-conv-${k % 2}`) });
    for (let k = 0; k < 4; k++) sent.push({ id: 'q-poor', p: predict('q-poor', `question ${k}`, `q-poor-conv-${k}`) });
    expect(sent).toHaveLength(60);
    const results = await Promise.all(sent.map((s) => s.p));
    const by = (id: string) => results.filter((_, i) => sent[i]!.id === id);

    // both workers ran jobs
    const ran = (topo.workers as Worker[]).map((w, i) => w.jobs().length - jobsBefore[i]!);
    step(`jobs per worker: ${ran.join(' + ')}`);
    expect(ran.every((n) => n > 0)).toBe(true);
    expect(ran.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(60);

    // every answer came from exactly one model call, and every model call is paid by its customer
    const calls = model.calls.slice(from);
    expect(calls).toHaveLength(results.filter(answered).length);
    for (const id of Object.keys(topUps)) {
      const mine = callsOf(id, from);
      expect(mine.length, `${id}: model calls vs answers`).toBe(by(id).filter(answered).length);
      await expectExactCharges(id, topUps[id]!, mine);
    }
    // the well-funded customers got every answer
    for (let i = 1; i <= 8; i++) expect(by(`q-c${i}`).every(answered), `q-c${i}: ${JSON.stringify(by(`q-c${i}`).map((r) => r.data?.text ?? r.data))}`).toBe(true);
    // the free plan: exactly 25 conversations across both workers, the rest told the quota message
    const free = by('q-free');
    expect(free.filter(answered)).toHaveLength(25);
    expect(free.filter((r) => !answered(r)).map((r) => r.data?.text)).toEqual(Array(7).fill(DEFAULT_REFUSAL_MESSAGES.quotaExceeded));
    expect((await quota.usage('q-free')).sessionsUsed).toBe(25);
    // The poor customer is refused for funds, by Quota Guard or, when a concurrent run took the money between
    // the guard's check and the model call's hold, by the metered model: either way the answer is the
    // operator's message with HTTP 200, never an error, engine text, a secret or a stack.
    for (const r of by('q-poor').filter((x) => !answered(x))) {
      expect(r.status, JSON.stringify(r.data)).toBe(200);
      expect(r.data?.text).toBe(DEFAULT_REFUSAL_MESSAGES.insufficientFunds);
    }
    expect(by('q-poor').filter(answered).length).toBeGreaterThan(0);
    expect((await ledger.checkInvariants()).ok).toBe(true);
    step(`60 concurrent: ${results.filter(answered).length} answered, ${calls.length} model calls, all paid; q-free 25/25 sessions; q-poor ${by('q-poor').filter(answered).length}/4`);
  }, 300_000);

  queueCase('PostgreSQL restarted under load: main and workers stay up, answers or clean refusals/errors meanwhile, then service resumes', async () => {
    await customer('q-pg', '5');
    // The test's own pool would see its connections cut too; it reconnects after the restart.
    await ledger.close();
    const from = model.calls.length;
    const results: Reply[] = [];
    const inFlight: Array<Promise<void>> = [];
    const fire = (k: number) => inFlight.push(predict('q-pg', `during restart ${k}`, `q-pg-conv-${k}`).then((r) => void results.push(r)));
    for (let k = 0; k < 8; k++) fire(k);
    await new Promise((r) => setTimeout(r, 300));
    // Down for 4 s: new predictions meet a refused connection, running ones a cut one.
    const restart = (async () => {
      await cluster!.stop();
      await new Promise((r) => setTimeout(r, 4000));
      await cluster!.start();
    })();
    for (let k = 8; k < 16; k++) {
      fire(k);
      await new Promise((r) => setTimeout(r, 250));
    }
    await restart;
    step('PostgreSQL restarted');
    await Promise.all(inFlight);

    // Every reply is an answer, the operator's "unavailable" refusal, or a Flowise error without internals.
    const kinds = results.map((r) => {
      if (answered(r)) return 'answer';
      if (r.status === 200 && r.data?.text === DEFAULT_REFUSAL_MESSAGES.unavailable) return 'unavailable';
      const body = JSON.stringify(r.data);
      expect(r.status, body).toBe(500);
      expect(body).not.toMatch(/postgres(ql)?:\/\/|\n\s+at |password/i);
      expect(body).not.toContain(cluster!.password);
      return 'error';
    });
    step(`during the restart: ${['answer', 'unavailable', 'error'].map((k) => `${kinds.filter((x) => x === k).length} ${k}`).join(', ')}`);
    step(`errors seen: ${[...new Set(results.filter((r) => !answered(r)).map((r) => JSON.stringify(r.data).slice(0, 200)))].join(' | ')}`);

    // Nobody died; the service comes back on its own.
    expect((topo.workers as Worker[]).every((w) => w.alive())).toBe(true);
    const uncaught = [topo.main.logFile, ...(topo.workers as Array<Worker & { logFile: string }>).map((w) => w.logFile)]
      .flatMap((f: string) => fs.readFileSync(f, 'utf8').split('\n'))
      .filter((l: string) => /uncaught/i.test(l));
    // Staying up only because Flowise's own handler swallowed an uncaught `pg` error does not count.
    expect(uncaught, 'uncaught exceptions in the main or worker logs').toEqual([]);
    expect((await fetch(`${topo.url}/api/v1/ping`)).ok).toBe(true);
    let back: Reply | undefined;
    const deadline = Date.now() + 90_000;
    for (let k = 0; Date.now() < deadline; k++) {
      back = await predict('q-pg', `after restart ${k}`, `q-pg-after-${k}`);
      if (answered(back)) break;
      await new Promise((r) => setTimeout(r, 2000));
    }
    expect(answered(back!), JSON.stringify(back)).toBe(true);
    const after = await Promise.all(Array.from({ length: 6 }, (_, k) => predict('q-pg', `resumed ${k}`, `q-pg-resumed-${k}`)));
    expect(after.every(answered), JSON.stringify(after.map((r) => r.data))).toBe(true);

    // The ledger is exact: every fee and every settled call is at the rate card, nothing overdrawn. A call
    // whose settle was cut by the outage leaves its hold to expire (see README, "Queue mode").
    await openTestLedger();
    expect((await ledger.checkInvariants()).ok).toBe(true);
    const b = await ledger.balance('q-pg');
    expect(b.balance).toBeGreaterThanOrEqual(0n);
    const paid = (await ledger.statement('q-pg')).filter((e) => e.type === 'charge' || e.type === 'settle').reduce((a, e) => a - e.amount, 0n);
    expect(formatUsd(parseUsd('5') - b.balance)).toBe(formatUsd(paid));
    const calls = callsOf('q-pg', from);
    const settled = (await ledger.statement('q-pg')).filter(isCallSettle).length;
    step(`q-pg: ${calls.length} model calls, ${settled} settled, held $${formatUsd(b.held)} left to expire`);
    expect(settled).toBeLessThanOrEqual(calls.length);
  }, 300_000);

  queueCase('a worker killed with kill -9 mid-call: BullMQ retries on the other worker, the run fee is paid once, the dead call is not billed, nothing stays held', async () => {
    await customer('q-crash', '1');
    const from = model.calls.length;
    let first = true;
    // The first call of this customer hangs (the worker is killed while it waits); any retry answers at once.
    model.setScript((req) => {
      const content = expectedReply(req).content; // the default echo
      if (first && JSON.stringify(req.messages).includes('[q-crash]')) {
        first = false;
        return { content, delayMs: 120_000 };
      }
      return { content };
    });
    const workers = topo.workers as Worker[];
    const before = workers.map((w) => w.jobs().length);
    const pending = predict('q-crash', 'will my worker survive', 'q-crash-conv');
    const deadline = Date.now() + 60_000;
    while (callsOf('q-crash', from).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(callsOf('q-crash', from)).toHaveLength(1);
    const victim = workers.find((w, i) => w.jobs().length > before[i]!)!;
    expect(victim).toBeDefined();
    // mid-call: the fee is charged and the model call's hold is open
    const mid = await ledger.balance('q-crash');
    expect(mid.held).toBeGreaterThan(0n);
    victim.kill('SIGKILL');
    step(`killed ${victim.name} (pid ${victim.pid}) mid-call; waiting for BullMQ to re-run the job`);

    const r = await pending;
    model.setScript(null);
    const calls = callsOf('q-crash', from);
    const statement = await ledger.statement('q-crash');
    const fees = statement.filter(isFee);
    const settles = statement.filter(isCallSettle);
    step(`after the kill: HTTP ${r.status} ${JSON.stringify(r.data?.text ?? r.data).slice(0, 200)}; ${calls.length} model calls, ${fees.length} fee(s), ${settles.length} settle(s)`);
    expect(victim.alive()).toBe(false);
    expect(workers.filter((w) => w !== victim).every((w) => w.alive())).toBe(true);
    // Never twice: one fee whatever happened; at most the retry's call is settled.
    expect(fees).toHaveLength(1);
    if (answered(r)) {
      // retried on the surviving worker: the answer is paid once — fee + the call that produced it
      expect(calls).toHaveLength(2);
      expect(settles.map((e) => -e.amount)).toEqual([callPrice(calls[1]!)]);
    } else {
      expect(settles).toHaveLength(0);
    }

    // The dead call was reserved inside the run's reservation; the retry reuses that reservation (same run
    // key), so nothing of the dead call is charged: the operator's loss (README, "Queue mode"). Whatever is
    // still held when the run is over (the reservation of an attempt that never came back) expires and is swept.
    const open = await heldReturned('q-crash');
    if (open.held > 0n) {
      const later = await openLedger(ledgerUrl, { clock: () => Date.now() + HOLD_TTL_MS + 60_000 });
      try {
        expect((await later.sweepExpiredHolds()).expired).toBeGreaterThanOrEqual(1);
      } finally {
        await later.close();
      }
    }
    const end = await ledger.balance('q-crash');
    expect(end.held).toBe(0n);
    const owed: Nanos = fee() + (answered(r) ? callPrice(calls[1]!) : 0n);
    expect(formatUsd(parseUsd('1') - end.balance)).toBe(formatUsd(owed));
    expect((await ledger.checkInvariants()).ok).toBe(true);
  }, 300_000);
});
