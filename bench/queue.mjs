// Queue-mode throughput with metering on vs off: the real topology (test/e2e/queue-env.mjs: Flowise
// 3.1.4 main with MODE=queue, 2 workers, Redis, Flowise's database and the ledger on PostgreSQL),
// a loopback OpenAI-compatible model with a fixed delay, and two chatflows that differ only in
// billing: the metered example (Quota Guard + Metered Chat Model) and the same flow without them.
// At saturation (BENCH_CLIENTS concurrent clients). Every round runs each variant once, and every other round
// runs them in reverse order (off, on; on, off; …): the cost of a prediction drifts through a run (Flowise's
// tables grow), and in a fixed order the later variant would always meet more of it.
//
//   npm run build && node bench/queue.mjs
//
// Besides predictions/s, per prediction: PostgreSQL transactions, CPU ms and read + write system calls of
// main, the workers and the PostgreSQL backends (system calls move far less with the machine's load than time,
// but both grow when fewer predictions share a wake-up: a slower variant pays more per prediction for the same work).
// Env: BENCH_CLIENTS (32), BENCH_SECONDS per round (15), BENCH_ROUNDS per variant (2),
// BENCH_MODEL_DELAY_MS (20), BENCH_MESSAGES (1: every prediction a new conversation, so every admission opens a
// session; N: each client's conversations take N predictions, the later ones continuing the session),
// BENCH_CUSTOMERS (1: every prediction bills one customer, the contended
// case; N: client i bills customer i mod N), BENCH_PG (postgres://postgres@127.0.0.1:5432; a database is created
// and dropped), FLOWISE_BILLING_CACHE (the Flowise install to use), BENCH_CPU_PROF (a directory: main and
// the workers run with --cpu-prof and write their profiles under <dir>/main and <dir>/workers when they stop,
// with <dir>/rounds.json for bench/cpu-profile-summary.mjs --rounds), BENCH_VARIANTS (off,on: e.g. `on` alone,
// to profile one variant without the other's samples; `fat` adds the plain flow carrying the billing nodes'
// saved data where Flowise ignores it, so its flowData is the metered one's size: fat − off is what those bytes
// cost, on − fat what running the two nodes and the ledger costs; `variant` is the plain flow with ChatOpenAI
// swapped for OpenAI (metered), examples/metered-chatflow.json: metering with no node of its own; `variantfat` is
// the plain flow carrying what the variant's node saves beyond ChatOpenAI's (its billing inputs' definitions and
// values) where Flowise ignores it: variantfat − off is what the variant's bytes cost, variant − variantfat what
// running its metering costs; `variantnosessions` is the variant with its Count Sessions input off: variant −
// variantnosessions is what the session admission costs), BENCH_HISTORY (0; N: N customers with a past in the ledger and the database analyzed
// before the rounds, bench/ledger-history.mjs: a ledger in use, not one planned for empty tables), BENCH_LEDGER (an SQLite file for the ledger instead of a PostgreSQL schema: a
// diagnostic, not a deployment, its cheap writes bound what metering costs without its PostgreSQL transactions).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import pg from 'pg';
import { api } from '../test/e2e/flowise-env.mjs';
import { startQueueTopology } from '../test/e2e/queue-env.mjs';
import { analyzeDatabase, seedHistory } from './ledger-history.mjs';

const require = createRequire(import.meta.url);
const { openLedger } = require('../dist/src/ledger/open.js');
const { QuotaService } = require('../dist/src/quota/service.js');
const { signBillingToken } = require('../dist/src/identity/index.js');
const { formatUsd } = require('../dist/src/money.js');

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 32);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const DELAY = Number(process.env.BENCH_MODEL_DELAY_MS ?? 20);
const CUSTOMERS = Number(process.env.BENCH_CUSTOMERS ?? 1);
const HISTORY = Number(process.env.BENCH_HISTORY ?? 0);
const MESSAGES = Math.max(1, Number(process.env.BENCH_MESSAGES ?? 1));
/** Every flow the bench can run, by the variant name BENCH_VARIANTS uses, and its chatflow's name in Flowise. */
const FLOW_NAMES = {
  off: 'bench plain',
  on: 'bench metered',
  fat: 'bench plain, metered size',
  variant: 'bench metered variant',
  variantfat: 'bench plain, metered variant size',
  variantnosessions: 'bench metered variant, no session count',
};
const VARIANTS = (process.env.BENCH_VARIANTS ?? 'off,on').split(',').map((v) => v.trim()).filter((v) => v in FLOW_NAMES);
const SECRET = 'bench-queue-billing-token-secret-0123456789';
const log = (m) => process.stdout.write(`${m}\n`);

/** A minimal OpenAI-compatible chat server: `echo: <last user text>`, word-count usage, streaming or not. */
function modelServer() {
  const server = http.createServer((req, res) => {
    let raw = '';
    req.on('data', (d) => (raw += d));
    req.on('end', () => {
      const body = JSON.parse(raw || '{}');
      const last = [...(body.messages ?? [])].reverse().find((m) => m.role === 'user');
      const text = `echo: ${typeof last?.content === 'string' ? last.content : ''}`;
      const words = (s) => s.split(/\s+/).filter(Boolean).length;
      const prompt = (body.messages ?? []).reduce((n, m) => n + 4 + words(typeof m.content === 'string' ? m.content : ''), 0);
      const usage = { prompt_tokens: prompt, completion_tokens: words(text), total_tokens: prompt + words(text) };
      const base = { id: `chatcmpl-${Date.now()}`, created: Math.floor(Date.now() / 1000), model: body.model ?? 'gpt-4o-mini' };
      setTimeout(() => {
        if (body.stream) {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          const chunk = (o) => res.write(`data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', ...o })}\n\n`);
          chunk({ choices: [{ index: 0, delta: { role: 'assistant', content: text }, finish_reason: null }] });
          chunk({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] });
          chunk({ choices: [], usage });
          res.end('data: [DONE]\n\n');
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ ...base, object: 'chat.completion', choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }], usage }));
        }
      }, DELAY);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, baseURL: `http://127.0.0.1:${server.address().port}/v1` })));
}

/** Each variant's flowData (keys as FLOW_NAMES): the metered example, the same flow without Quota Guard and Metered Chat Model, and the rest. */
function flows(ids, basepath) {
  const metered = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'metered-conversation-chatflow.json'), 'utf8'));
  for (const n of metered.nodes) {
    if (n.data.inputParams?.some((p) => p.type === 'credential' && p.credentialNames?.includes('billingLedger'))) n.data.credential = ids.ledger;
    if (n.data.name === 'chatOpenAI') {
      n.data.credential = ids.openai;
      n.data.inputs.basepath = basepath;
    }
  }
  const plain = structuredClone(metered);
  plain.nodes = plain.nodes.filter((n) => !['meteredChatModel', 'quotaGuard'].includes(n.data.name));
  const chain = plain.nodes.find((n) => n.data.name === 'conversationChain');
  const openai = plain.nodes.find((n) => n.data.name === 'chatOpenAI');
  chain.data.inputs.model = `{{${openai.id}.data.instance}}`;
  chain.data.inputs.inputModeration = [];
  const kept = new Set(plain.nodes.map((n) => n.id));
  plain.edges = plain.edges.filter((e) => kept.has(e.source) && kept.has(e.target));
  const out = openai.data.outputAnchors[0].id;
  const target = `${chain.id}-input-model-BaseChatModel`;
  plain.edges.push({ source: openai.id, sourceHandle: out, target: chain.id, targetHandle: target, type: 'buttonedge', id: `${openai.id}-${out}-${chain.id}-${target}`, data: { label: '' } });
  // The plain flow, as large as the metered one: the billing nodes' saved data rides on its nodes under a key
  // nothing reads (Flowise still reads, parses, clones and queues it), so fat − off is what flowData's size costs.
  const fat = structuredClone(plain);
  const billing = metered.nodes.filter((n) => ['meteredChatModel', 'quotaGuard'].includes(n.data.name));
  billing.forEach((n, i) => (fat.nodes[i % fat.nodes.length].data.unusedBillingPadding = structuredClone(n)));
  // The plain flow's shape with the model swapped for its metered variant (OpenAI (metered)): no extra node.
  const variant = JSON.parse(fs.readFileSync(path.join(ROOT, 'examples', 'metered-chatflow.json'), 'utf8'));
  for (const n of variant.nodes) {
    if (n.data.name !== 'chatOpenAIMetered') continue;
    n.data.credential = ids.openai;
    Object.assign(n.data.inputs, { basepath, billingLedgerCredential: ids.ledger }, JSON.parse(process.env.BENCH_VARIANT_INPUTS ?? '{}'));
  }
  // The plain flow as large as the variant: ChatOpenAI carries the variant node's billing inputs (definitions
  // and values, what ChatOpenAI lacks) under a key nothing reads.
  const variantfat = structuredClone(plain);
  const metNode = variant.nodes.find((n) => n.data.name === 'chatOpenAIMetered');
  const own = new Set(openai.data.inputParams.map((p) => p.name));
  variantfat.nodes.find((n) => n.id === openai.id).data.unusedBillingPadding = {
    inputParams: metNode.data.inputParams.filter((p) => !own.has(p.name)),
    inputs: Object.fromEntries(Object.entries(metNode.data.inputs).filter(([k]) => !own.has(k))),
  };
  // The variant counting no sessions (its Count Sessions input off): variant − variantnosessions is what the
  // session admission costs.
  const variantnosessions = structuredClone(variant);
  for (const n of variantnosessions.nodes) if (n.data.name === 'chatOpenAIMetered') n.data.inputs.checkSessions = false;
  return { on: metered, off: plain, fat, variant, variantfat, variantnosessions };
}

/** A client of the PostgreSQL server's maintenance database (statistics, backend pids). */
async function admin(fn) {
  const u = new URL(pgUrl);
  u.pathname = '/postgres';
  const c = new pg.Client({ connectionString: u.href });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** CPU time (ms, user + system) a process has used so far; 0 when it is gone. Linux /proc. */
function cpuMs(pid) {
  try {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return ((Number(f[11]) + Number(f[12])) * 1000) / TICKS;
  } catch {
    return 0;
  }
}
const TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/**
 * Read and write system calls a process has made so far (socket and file alike; 0 when it is gone). Linux
 * /proc. Each statement round trip costs a write on both ends and a read or more: a count that does not
 * move with the machine's load, where CPU time does.
 */
function syscalls(pid) {
  try {
    const io = fs.readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (k) => Number(new RegExp(`^${k}: (\\d+)`, 'm').exec(io)?.[1] ?? 0);
    return field('syscr') + field('syscw');
  } catch {
    return 0;
  }
}

/**
 * What the topology has done so far: PostgreSQL transactions in `db` (Flowise's and the ledger's, one
 * database) and CPU time of main, the workers and the PostgreSQL backends serving `db`. On a shared
 * machine CPU per prediction is steadier than predictions per second.
 */
async function usage(db, pids) {
  return admin(async (c) => {
    // Statistics reach pg_stat_database when a backend reports them (about once a second) and a run ends
    // 2 s after its last call (its release riding along with the next batch within 0.3 s): read after a pause.
    await new Promise((r) => setTimeout(r, 3000));
    await c.query('SELECT pg_stat_clear_snapshot()');
    const { rows } = await c.query('SELECT xact_commit + xact_rollback AS n FROM pg_stat_database WHERE datname = $1', [db]);
    const backends = (await c.query('SELECT pid FROM pg_stat_activity WHERE datname = $1', [db])).rows.map((r) => r.pid);
    const cpu = new Map([...pids, ...backends].map((p) => [p, cpuMs(p)]));
    const calls = new Map([...pids, ...backends].map((p) => [p, syscalls(p)]));
    return { xacts: Number(rows[0]?.n ?? 0), cpu, calls };
  });
}

/**
 * The measured rounds as windows of CLOCK_MONOTONIC µs, the clock of a V8 CPU profile's timestamps on Linux,
 * with the predictions answered in each: bench/cpu-profile-summary.mjs --rounds keeps only these samples
 * (no start-up, warm-up or pauses) and divides by the predictions.
 */
const windows = [];
const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

/** CLIENTS loops sending predictions for SECONDS; returns answered predictions per second (and the count). */
async function round(client, flowId, tokens, label) {
  const until = Date.now() + SECONDS * 1000;
  let ok = 0;
  let failed = 0;
  let seq = 0;
  // What the unanswered ones got, a few distinct answers (status and text or error message).
  const seen = new Map();
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, c) => {
      const token = tokens[c % tokens.length];
      // Each conversation takes MESSAGES predictions in a row: its first opens a session, the others continue it.
      let chatId = '';
      let left = 0;
      while (Date.now() < until) {
        const k = seq++;
        if (left-- <= 0) {
          chatId = `${label}-${k}-${Date.now()}`;
          left = MESSAGES - 1;
        }
        const r = await client.predict(flowId, { question: `bench question ${k}`, chatId, overrideConfig: { vars: { billingToken: token } } }, { allowError: true });
        if (r.status === 200 && String(r.data?.text).startsWith('echo:')) ok++;
        else {
          failed++;
          const what = `${r.status} ${String(r.data?.text ?? r.data?.message ?? JSON.stringify(r.data)).slice(0, 160)}`;
          seen.set(what, (seen.get(what) ?? 0) + 1);
        }
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  if (failed) log(`  (${label}: ${failed} predictions not answered: ${[...seen].slice(0, 3).map(([w, n]) => `${n}× ${w}`).join(' | ')})`);
  return { rate: ok / secs, ok };
}

/** A round, with PostgreSQL transactions and CPU milliseconds per answered prediction in it. */
async function measured(client, flowId, tokens, label, db, pids) {
  const u0 = await usage(db, pids);
  const from = monotonicUs();
  const r = await round(client, flowId, tokens, label);
  windows.push({ label, from, to: monotonicUs(), predictions: r.ok });
  const u1 = await usage(db, pids);
  const n = Math.max(1, r.ok);
  // Per part: main, the workers, the PostgreSQL backends.
  const parts = { main: 0, workers: 0, postgres: 0 };
  const part = (pid) => (pid === pids[0] ? 'main' : pids.includes(pid) ? 'workers' : 'postgres');
  for (const [pid, ms] of u1.cpu) parts[part(pid)] += (ms - (u0.cpu.get(pid) ?? 0)) / n;
  // A backend that appeared during the round (a new pooled connection) counts from zero.
  const calls = { main: 0, workers: 0, postgres: 0 };
  for (const [pid, k] of u1.calls) calls[part(pid)] += (k - (u0.calls.get(pid) ?? 0)) / n;
  return { ...r, xactsPer: (u1.xacts - u0.xacts) / n, cpuPer: parts.main + parts.workers + parts.postgres, parts, calls };
}

/** Node flags that make a process of `part` (main, workers) write its CPU profile under $BENCH_CPU_PROF/<part> when it stops. */
function cpuProf(part) {
  return process.env.BENCH_CPU_PROF ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(process.env.BENCH_CPU_PROF, part)] : [];
}

/**
 * The bytes one finished job of each variant keeps in Redis (`data`: what main enqueued, the chatflow row
 * with its flowData included; `returnvalue`: the answer main waits for). Flowise keeps finished jobs, so the
 * latest of each flow is there to read.
 */
function jobBytes(redis, flowIds) {
  const u = new URL(redis.url);
  // In Redis: the newest finished job of each flow, found by its chatflow id in the job's data.
  const lua = `local ids = redis.call('ZREVRANGE', KEYS[1], 0, -1)
local out = {}
local left = #ARGV - 1
for a = 1, #ARGV do out[a] = '?' end
for _, id in ipairs(ids) do
  if left == 0 then break end
  local data = redis.call('HGET', ARGV[#ARGV] .. id, 'data') or ''
  for a = 1, #ARGV - 1 do
    if out[a] == '?' and string.find(data, '"id":"' .. ARGV[a] .. '"', 1, true) then
      out[a] = #data .. ', ' .. redis.call('HSTRLEN', ARGV[#ARGV] .. id, 'returnvalue')
      left = left - 1
    end
  end
end
return table.concat(out, ';', 1, #ARGV - 1)`;
  const prefix = `bull:${redis.queueName}-prediction:`;
  const r = spawnSync('redis-cli', ['-h', u.hostname, '-p', u.port || '6379', 'EVAL', lua, '1', `${prefix}completed`, ...VARIANTS.map((v) => flowIds[v]), prefix], { encoding: 'utf8' });
  if (r.status !== 0) return 'redis-cli unavailable';
  const sizes = r.stdout.trim().split(';');
  return VARIANTS.map((v, i) => `${v} ${sizes[i] ?? '?'}`).join('; ');
}

const pgUrl = new URL(process.env.BENCH_PG ?? 'postgres://postgres@127.0.0.1:5432');
const model = await modelServer();
const topo = await startQueueTopology({
  pg: { host: pgUrl.hostname, port: Number(pgUrl.port || 5432), user: decodeURIComponent(pgUrl.username || 'postgres'), password: decodeURIComponent(pgUrl.password) },
  workers: 2,
  ...(process.env.BENCH_LEDGER ? { ledgerUrl: path.resolve(process.env.BENCH_LEDGER) } : {}),
  workerNodeArgs: cpuProf('workers'),
  mainNodeArgs: cpuProf('main'),
  log: () => undefined,
});
try {
  const ledgerUrl = topo.env.FLOWISE_BILLING_DB;
  const ledger = await openLedger(ledgerUrl);
  const quota = new QuotaService(ledger, { actor: 'bench' });
  await quota.createPlan({ id: 'bench', name: 'Bench', basePriceUsd: '0', sessionsIncluded: 100_000_000, managedModels: true });
  const customers = Array.from({ length: CUSTOMERS }, (_, i) => (i === 0 ? 'bench' : `bench${i}`));
  for (const id of customers) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000n * 1_000_000_000n, idempotencyKey: `${id}-topup` });
    await quota.subscribe({ customerId: id, planId: 'bench' });
  }
  const seeded = HISTORY > 0 && /^postgres/i.test(ledgerUrl);
  if (seeded) {
    await seedHistory(ledger, HISTORY, { quota, planId: 'bench' });
    await analyzeDatabase(ledgerUrl);
  }
  const client = api(topo.url);
  await client.setup();
  const ids = {
    ledger: (await client.createCredential({ name: 'Billing ledger', credentialName: 'billingLedger', plainDataObj: { ledgerDatabase: '', billingTokenSecret: SECRET } })).id,
    openai: (await client.createCredential({ name: 'Loopback OpenAI', credentialName: 'openAIApi', plainDataObj: { openAIApiKey: 'sk-bench' } })).id,
  };
  const f = flows(ids, model.baseURL);
  const apiConfig = { overrideConfig: { status: true, nodes: {}, variables: [{ id: '', name: 'billingToken', type: 'static', enabled: true }] } };
  const flowIds = {};
  for (const [v, name] of Object.entries(FLOW_NAMES)) {
    flowIds[v] = (await client.createChatflow({ name, flowData: f[v], type: 'CHATFLOW' })).id;
    await client.updateChatflow(flowIds[v], { apiConfig });
  }
  log(`flowData bytes: ${VARIANTS.map((v) => `${v} ${JSON.stringify(f[v]).length}`).join(', ')}`);
  const tokens = customers.map((id) => signBillingToken(SECRET, id, { ttlSeconds: 3600 }));

  log(`queue mode: main + 2 workers, ${CLIENTS} clients over ${CUSTOMERS} customer(s), ${MESSAGES} prediction(s) per conversation, ${SECONDS}s rounds × ${ROUNDS} per variant, model delay ${DELAY} ms, ledger ${seeded ? `with ${HISTORY} customers' history, analyzed` : 'fresh'}, Node ${process.version} (client)`);
  // warm-up: both flows load, connections open
  for (const v of VARIANTS) await round(client, flowIds[v], tokens, `warm-${v}`).catch(() => 0);
  const perVariant = () => Object.fromEntries(VARIANTS.map((v) => [v, []]));
  const rates = perVariant();
  const tx = perVariant();
  const cpu = perVariant();
  const parts = perVariant();
  const calls = perVariant();
  const pids = [topo.main.pid, ...topo.workers.map((w) => w.pid)];
  for (let i = 0; i < ROUNDS; i++) {
    for (const v of i % 2 === 0 ? VARIANTS : [...VARIANTS].reverse()) {
      const r = await measured(client, flowIds[v], tokens, `${v}${i}`, topo.flowiseDatabase, pids);
      rates[v].push(r.rate);
      tx[v].push(r.xactsPer);
      cpu[v].push(r.cpuPer);
      parts[v].push(r.parts);
      calls[v].push(r.calls);
    }
    const both = VARIANTS.includes('off') && VARIANTS.includes('on');
    if (!both) {
      for (const v of VARIANTS) log(`  round ${i + 1}: ${v} ${rates[v][i].toFixed(1)}/s · per prediction: PostgreSQL transactions ${tx[v][i].toFixed(1)}, CPU ms (main + workers + PostgreSQL) ${cpu[v][i].toFixed(1)}`);
      continue;
    }
    log(`  round ${i + 1}: off ${rates.off[i].toFixed(1)}/s, on ${rates.on[i].toFixed(1)}/s · per prediction: PostgreSQL transactions off ${tx.off[i].toFixed(1)}, on ${tx.on[i].toFixed(1)}; CPU ms (main + workers + PostgreSQL) off ${cpu.off[i].toFixed(1)}, on ${cpu.on[i].toFixed(1)}${VARIANTS.includes('fat') ? `, fat ${cpu.fat[i].toFixed(1)}` : ''}`);
  }
  const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
  if (ROUNDS > 1) log(`rounds ran in order ${VARIANTS.join(', ')} then reversed, alternately${ROUNDS % 2 ? ' (an odd number of rounds: the first order ran once more, so a drift does not cancel exactly)' : ''}`);
  if (!(VARIANTS.includes('off') && VARIANTS.includes('on')) || VARIANTS.length > 2) {
    for (const v of VARIANTS) {
      const p = (k) => mean(parts[v].map((x) => x[k])).toFixed(1);
      log(`${v}: ${mean(rates[v]).toFixed(1)} predictions/s, CPU per prediction ${mean(cpu[v]).toFixed(1)} ms (main ${p('main')}, workers ${p('workers')}, PostgreSQL ${p('postgres')})`);
      const k = (x) => mean(calls[v].map((c) => c[x])).toFixed(1);
      log(`  read + write system calls per prediction: main ${k('main')}, workers ${k('workers')}, PostgreSQL ${k('postgres')}; PostgreSQL transactions ${mean(tx[v]).toFixed(1)}`);
    }
  }
  /** Each round's ratio to the plain flow's round next to it: how far one run's figure can be trusted on this machine. */
  const spread = (v) => {
    if (ROUNDS < 2) return '';
    const each = rates[v].map((x, i) => x / rates.off[i]);
    const sorted = [...each].sort((a, b) => a - b);
    const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2] : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
    return `\n  by round: ${each.map((x) => x.toFixed(3)).join(', ')} (median ${median.toFixed(3)}; a difference between variants smaller than this spread is noise)`;
  };
  if (VARIANTS.includes('off') && VARIANTS.includes('on')) {
    const offMean = mean(rates.off);
    const onMean = mean(rates.on);
    log(`metering off (baseline): ${offMean.toFixed(1)} predictions/s`);
    log(`metering on:             ${onMean.toFixed(1)} predictions/s`);
    log(`ratio on/off: ${(onMean / offMean).toFixed(3)}  (metering costs ${((1 - onMean / offMean) * 100).toFixed(1)} % of throughput; goal < 10 %)${spread('on')}`);
    log(`CPU per prediction: off ${mean(cpu.off).toFixed(1)} ms, on ${mean(cpu.on).toFixed(1)} ms (ratio off/on ${(mean(cpu.off) / mean(cpu.on)).toFixed(3)}: the throughput ratio a CPU-bound machine would show)`);
    const part = (v, k) => mean(parts[v].map((p) => p[k])).toFixed(1);
    log(`  of which main ${part('off', 'main')} → ${part('on', 'main')}, workers ${part('off', 'workers')} → ${part('on', 'workers')}, PostgreSQL ${part('off', 'postgres')} → ${part('on', 'postgres')} ms (off → on)`);
    const k = (v, x) => mean(calls[v].map((c) => c[x])).toFixed(1);
    log(`read + write system calls per prediction (independent of other jobs' load, not of this run's rate): main ${k('off', 'main')} → ${k('on', 'main')}, workers ${k('off', 'workers')} → ${k('on', 'workers')}, PostgreSQL ${k('off', 'postgres')} → ${k('on', 'postgres')} (off → on); PostgreSQL transactions ${mean(tx.off).toFixed(1)} → ${mean(tx.on).toFixed(1)}`);
  }
  for (const v of VARIANTS.includes('off') ? VARIANTS.filter((x) => x !== 'off' && x !== 'on') : []) {
    const r = mean(rates[v]) / mean(rates.off);
    log(`ratio ${v}/off: ${r.toFixed(3)}  (costs ${((1 - r) * 100).toFixed(1)} % of throughput${{ variant: '; the model swapped for its metered variant, no extra node', variantfat: "; the plain flow carrying the variant's saved billing inputs, not run", variantnosessions: '; the variant counting no sessions' }[v] ?? ''})${spread(v)}`);
    const byRound = cpu[v].map((x, i) => (cpu.off[i] / x).toFixed(3)).join(', ');
    log(`  CPU per prediction off/${v}: ${(mean(cpu.off) / mean(cpu[v])).toFixed(3)} (by round: ${byRound}; the throughput ratio a CPU-bound machine would show), PostgreSQL's alone ${(mean(parts[v].map((p) => p.postgres)) / mean(parts.off.map((p) => p.postgres))).toFixed(2)}× the plain flow's`);
  }
  log(`BullMQ job bytes (data, returnvalue): ${jobBytes(topo.redis, flowIds)}`);
  let held = 0n;
  for (const id of customers) held += (await ledger.balance(id)).held;
  log(`ledger: held $${formatUsd(held)} after the run (expected 0), invariants ${(await ledger.checkInvariants()).ok ? 'ok' : 'VIOLATED'}`);
  await ledger.close();
  if (process.env.BENCH_CPU_PROF) {
    const dir = path.resolve(process.env.BENCH_CPU_PROF);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'rounds.json'), JSON.stringify(windows, null, 2));
    log(`profiles: ${dir}/main and ${dir}/workers once stopped; per prediction of the measured rounds: node bench/cpu-profile-summary.mjs ${dir}/main --rounds ${dir}/rounds.json`);
  }
} finally {
  await topo.stop();
  model.server.close();
}
process.exit(0);
