// node bench/plugin-prediction.mjs: what the plugin itself costs per metered Flowise prediction on
// PostgreSQL, without Flowise: a Quota Guard's precheck, then one metered model call (hold → instant
// model → settle), then the run's end, exactly as the nodes drive FlowRun. Counted, not timed:
//   statements     queries sent to the server (BEGIN and COMMIT included)
//   transactions   BEGIN…COMMIT blocks plus statements sent outside one (each is its own transaction)
//   socket writes  system calls that send statements (statements written in one tick leave in one);
//                  each costs the server a read and an answer, and is what a round trip costs on both ends
//   CPU ms         this process's user + system CPU (process.cpuUsage), per prediction
//   server CPU ms  the database's backends' CPU (/proc: the server must run on this machine), per prediction
// Env: FB_TEST_PG_URL, BENCH_PREDICTIONS (400), BENCH_CLIENTS (16), BENCH_SHOW (1: statement texts),
// BENCH_SESSIONS (0: the guard counts no sessions, so the precheck is a balance read instead of the
// admission), BENCH_PRECHECK (0: no guard at all, only the model call's hold and settle and the run's end):
// the differences are what the admission and the guard cost. BENCH_CUSTOMERS (1: every prediction bills one
// customer, whose subscription row every admission locks; N: prediction k bills customer k mod N),
// BENCH_HISTORY (20000 customers with a past seeded, bench/ledger-history.mjs, and the database analyzed first;
// 0: a fresh ledger), BENCH_BASELINES (floor,naive; '' for none).
// Then the same-run baselines (bench/prediction-floor.mjs), the same bookings written by hand on the same server
// with the same clients and customers: `floor`, the server deciding in one statement before the call and one
// after (no design that pays before the call and writes each prediction durably does with less), and `naive`,
// the client deciding in one transaction per step. The last column is the plugin's CPU (both sides) over theirs.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { createRequire } from 'node:module';
import { ensurePgDatabaseOrExit } from '../test/support/pg-database.mjs';
import { analyzeDatabase, seedHistory } from './ledger-history.mjs';
import { BASELINES, backendCpuReader, runBaseline } from './prediction-floor.mjs';

const require = createRequire(import.meta.url);
const pg = require('pg');
const { sharedLedger, openFlowRun, flowRunKey, closeSharedLedgers } = require('../dist/src/plugin/index.js');

const PG = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';
await ensurePgDatabaseOrExit(PG, { what: 'This benchmark measures PostgreSQL', skip: 'node bench/sqlite-cost.mjs' });
const N = Number(process.env.BENCH_PREDICTIONS ?? 400);
const kinds = (process.env.BENCH_BASELINES ?? 'floor,naive').split(',').map((k) => k.trim()).filter(Boolean);
const unknown = kinds.filter((k) => !(k in BASELINES));
if (unknown.length > 0) {
  console.error(`BENCH_BASELINES: unknown ${unknown.join(', ')} (known: ${Object.keys(BASELINES).join(', ')}; '' for none)`);
  process.exit(2);
}
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 16);
const schema = `pp_${process.pid}_${Date.now()}`;

let statements = 0;
let socketWrites = 0;
let transactions = 0;
const texts = new Map();
const inTx = new WeakMap();
const original = pg.Client.prototype.query;
pg.Client.prototype.query = function (config, values, callback) {
  statements++;
  const text = String(typeof config === 'string' ? config : config?.text ?? config?.name);
  if (text === 'BEGIN') {
    transactions++;
    inTx.set(this, true);
  } else if (text === 'COMMIT' || text === 'ROLLBACK') inTx.set(this, false);
  else if (!inTx.get(this)) transactions++;
  const head = text.replace(/\s+/g, ' ').slice(0, 90);
  texts.set(head, (texts.get(head) ?? 0) + 1);
  return original.call(this, config, values, callback);
};
// Every socket of this process is a ledger connection: one _writeGeneric is one write(v) system call.
const writeGeneric = net.Socket.prototype._writeGeneric;
net.Socket.prototype._writeGeneric = function (...args) {
  socketWrites++;
  return writeGeneric.apply(this, args);
};

const target = `${PG}${PG.includes('?') ? '&' : '?'}schema=${schema}`;
const { ledger, quota } = await sharedLedger(target);
await quota.createPlan({ id: 'bench', name: 'Bench', basePriceUsd: '0', sessionsIncluded: 100_000_000, managedModels: true });
const customers = Array.from({ length: Number(process.env.BENCH_CUSTOMERS ?? 1) }, (_, i) => (i === 0 ? 'bench' : `bench${i}`));
for (const id of customers) {
  await ledger.createCustomer({ id });
  await ledger.topUp({ customerId: id, amount: 1_000_000n * 1_000_000_000n, idempotencyKey: `${id}-topup` });
  await quota.subscribe({ customerId: id, planId: 'bench' });
}

// A ledger with a past (bench/ledger-history.mjs): BENCH_HISTORY (20000; 0: a fresh ledger) customers
// with a past (a settled hold, a subscription, a conversation), then ANALYZE, as autovacuum would have by then.
const HISTORY = Number(process.env.BENCH_HISTORY ?? 20000);
if (HISTORY > 0) {
  await seedHistory(ledger, HISTORY, { quota, planId: 'bench' });
  await analyzeDatabase(PG);
}

/** One prediction as Quota Guard + Metered Chat Model drive it (one model call, instant answer). */
async function prediction(k) {
  const chatId = `chat-${k}`;
  const runKey = flowRunKey({ chatflowId: 'flow', chatId, question: `q ${k}`, historyLength: 0 });
  const run = await openFlowRun({
    ledgerDatabase: target, customerId: customers[k % customers.length], conversationId: chatId, runKey, actor: 'node:quotaGuard',
    runFee: { item: 'PrivateFlowRun', quantity: '1' }, checkSessions: process.env.BENCH_SESSIONS !== '0', idleMs: Number(process.env.BENCH_IDLE_MS ?? 2000),
  });
  const refusal = process.env.BENCH_PRECHECK === '0' ? null : await run.precheck('0.01');
  if (refusal) throw new Error(`refused: ${refusal.message}`);
  const b = await run.beforeModelCall({ callKey: `node_1:${k}`, model: 'gpt-4o-mini', messages: [{ content: `bench question ${k}` }] });
  if (!b.ok) throw new Error(`refused: ${b.refusal.message}`);
  await run.afterModelCall(b.ticket, { usage: { inputTokens: 12, outputTokens: 3 } });
}

async function phase(from, count) {
  let next = from;
  await Promise.all(Array.from({ length: CLIENTS }, async () => {
    while (next < from + count) await prediction(next++);
  }));
  // The runs end after their idle time.
  await new Promise((r) => setTimeout(r, Number(process.env.BENCH_IDLE_MS ?? 2000) + 500));
}

await phase(0, 50); // warm-up: connections, prepared statements, JIT
statements = socketWrites = transactions = 0;
texts.clear();
// The backends serving this database (other connections than the ledger's are idle meanwhile).
const TICK_MS = 1000 / Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
const monitor = new pg.Client({ connectionString: PG });
await monitor.connect();
const serverCpu = backendCpuReader(monitor, TICK_MS);
const server0 = await serverCpu();
const cpu0 = process.cpuUsage();
await phase(1000, N);
const cpu = process.cpuUsage(cpu0);
const serverMs = (await serverCpu()) - server0;
const per = (x) => (x / N).toFixed(2);
const plugin = { statements: statements / N, cpuMs: (cpu.user + cpu.system) / 1000 / N, serverMs: serverMs / N };
console.log(`${N} predictions, ${CLIENTS} concurrent, ${customers.length} customer(s) (PostgreSQL ${new URL(PG).host})`);
console.log(`per prediction: statements ${per(statements)}, transactions ${per(transactions)}, socket writes ${per(socketWrites)}, CPU ${plugin.cpuMs.toFixed(2)} ms (idle wait included), server CPU ${plugin.serverMs.toFixed(2)} ms`);
if (process.env.BENCH_SHOW) for (const [t, n] of [...texts].sort((a, b) => b[1] - a[1])) console.log(`  ${(n / N).toFixed(2)}  ${t}`);
let held = 0n;
for (const id of customers) held += (await ledger.balance(id)).held;
console.log(`held after the run: ${held} (expected 0)`);

// The ledger's schema goes whatever happens below.
try {
  // Same-run baselines (bench/prediction-floor.mjs): the same bookings written by hand, same server, driver,
  // clients and customers.
  if (kinds.length > 0) {
    const rows = [['plugin', plugin]];
    for (const kind of kinds) rows.push([kind, await runBaseline(pg, { url: PG, kind, n: N, clients: CLIENTS, customers, serverCpu })]);
    const total = (r) => r.cpuMs + r.serverMs;
    console.log('\nper prediction      statements  client CPU ms  server CPU ms  both   plugin/this');
    for (const [name, r] of rows) {
      const ratio = name === 'plugin' ? '' : `${(total(plugin) / total(r)).toFixed(2)}×`;
      console.log(`${name.padEnd(18)}  ${r.statements.toFixed(2).padStart(10)}  ${r.cpuMs.toFixed(2).padStart(13)}  ${r.serverMs.toFixed(2).padStart(13)}  ${total(r).toFixed(2).padStart(5)}  ${ratio.padStart(11)}`);
    }
  }
} finally {
  await monitor.end();
  await closeSharedLedgers();
  const c = new pg.Client({ connectionString: PG });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await c.end();
}
