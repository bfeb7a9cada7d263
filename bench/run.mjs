// npm run bench: ledger throughput and latency, each figure next to a baseline measured in the same run.
//   SQLite: a naive one-transaction-per-operation loop on the same driver and disk
//           (BEGIN IMMEDIATE; SELECT balance; UPDATE; INSERT entry with a unique key; COMMIT).
//   PostgreSQL: pgbench's built-in TPC-B-like script at the same client count on the same server; at one
//           client also the node-postgres floor (nodeFloor): what this driver alone does per operation.
// A ratio is ledger operations/s (a hold+settle pair is 2 operations) ÷ baseline transactions/s;
// on SQLite the hold latency is printed next to the naive transaction's own latency in the same slices.
// Env: BENCH_SECONDS (default 3 per measurement), FB_BACKENDS=sqlite|postgres, FB_TEST_PG_URL,
//      BENCH_MEMORY_PAIRS (default 1000000; 0 skips the memory run; FB_BACKENDS=memory runs it alone),
//      BENCH_JSON (write rows there), BENCH_WARMUP (pairs run before the first measurement, default 10000, at most 5 s per half;
//      0 measures from a cold start). Run with --expose-gc (npm run bench does) for post-GC memory figures.
import { execFileSync, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ensurePgDatabaseOrExit } from '../test/support/pg-database.mjs';

const require = createRequire(import.meta.url);
const { openLedger } = require('../dist/src/ledger/open.js');
const { sqliteDriver } = require('../dist/src/ledger/sqlite.js');
const { Client } = require('pg');

const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);
const PG = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';
const BENCH_USAGE = { what: 'The ledger benchmarks run against SQLite and PostgreSQL', skip: 'FB_BACKENDS=sqlite npm run bench' };
const MEMORY_PAIRS = Number(process.env.BENCH_MEMORY_PAIRS ?? 1_000_000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 10_000);
const only = process.env.FB_BACKENDS?.split(',');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-bench-'));
const benchSchema = `bench_${process.pid}_${Date.now()}`;

const backends = [
  { name: 'sqlite', sync: 'NORMAL', label: 'sqlite (synchronous=NORMAL, default)', target: () => path.join(tmp, `bench-${Date.now()}.sqlite`), opts: { sqlite: { synchronous: 'NORMAL', checkpoint: 'inline' } } },
  // The same with the WAL checkpointed by a thread (sqlite.ts `checkpoint`): no checkpoint stalls, more ops/s, a higher p99.
  { name: 'sqlite', sync: 'NORMAL', label: 'sqlite (synchronous=NORMAL, checkpoint=background)', target: () => path.join(tmp, `bench-bg-${Date.now()}.sqlite`), opts: { sqlite: { synchronous: 'NORMAL', checkpoint: 'background' } } },
  { name: 'sqlite', sync: 'FULL', label: 'sqlite (synchronous=FULL)', target: () => path.join(tmp, `bench-full-${Date.now()}.sqlite`), opts: { sqlite: { synchronous: 'FULL', checkpoint: 'inline' } } },
  { name: 'postgres', label: 'postgres', target: () => `${PG}?schema=${benchSchema}`, opts: {} },
].filter((b) => !only || only.includes(b.name));

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];
const ms = (v) => `${v.toFixed(3)} ms`;
const ratio = (a, b) => (b > 0 ? `${(a / b).toFixed(2)}×` : 'n/a');

/** Pairs at `concurrency` callers for `seconds`, or until `maxPairs` are done. */
async function measure(ledger, concurrency, customers, label, seconds = SECONDS, maxPairs = Infinity) {
  const holdLat = [];
  let pairs = 0;
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async (_, lane) => {
      const customerId = customers[lane % customers.length];
      for (let i = 0; performance.now() < deadline && pairs < maxPairs; i++) {
        const key = `${label}:${lane}:${i}`;
        const t = performance.now();
        const h = await ledger.hold({ customerId, amount: 1_000_000n, idempotencyKey: key });
        holdLat.push(performance.now() - t);
        await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${key}:s` });
        pairs++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  holdLat.sort((a, b) => a - b);
  return { pairsPerSec: Math.round(pairs / elapsed), opsPerSec: Math.round((2 * pairs) / elapsed), p50: pct(holdLat, 0.5), p99: pct(holdLat, 0.99), pairs, elapsed, holdLat };
}

/**
 * The machine is shared and its load swings within seconds, so the baseline
 * and the ledger run in alternating short slices and each figure sums its own
 * slices: both see the same noise.
 */
async function interleaved(slices, sliceSeconds, baselineSlice, ledgerSlice) {
  let baseOps = 0;
  let baseSeconds = 0;
  let floorOps = 0;
  let floorSeconds = 0;
  let pairs = 0;
  let seconds = 0;
  const lat = [];
  const baseLat = [];
  for (let i = 0; i < slices; i++) {
    const b = await baselineSlice(i, sliceSeconds);
    baseOps += b.ops;
    baseSeconds += b.seconds;
    if (b.lat) baseLat.push(...b.lat);
    if (b.floor) {
      floorOps += b.floor.ops;
      floorSeconds += b.floor.seconds;
    }
    const r = await ledgerSlice(i, sliceSeconds);
    pairs += r.pairs;
    seconds += r.elapsed;
    lat.push(...r.holdLat);
  }
  lat.sort((a, b) => a - b);
  baseLat.sort((a, b) => a - b);
  return {
    baseline: Math.round(baseOps / baseSeconds),
    floor: floorSeconds ? Math.round(floorOps / floorSeconds) : undefined,
    baseLatency: baseLat.length ? { p50: pct(baseLat, 0.5), p99: pct(baseLat, 0.99), p999: pct(baseLat, 0.999) } : null,
    r: { pairsPerSec: Math.round(pairs / seconds), opsPerSec: Math.round((2 * pairs) / seconds), p50: pct(lat, 0.5), p99: pct(lat, 0.99), p999: pct(lat, 0.999), pairs },
  };
}

// ---- SQLite baseline: one transaction per operation, same driver, same disk ------------------

function openNaive(file, sync) {
  const driver = sqliteDriver();
  let db;
  if (driver === 'better-sqlite3') {
    const Database = require('better-sqlite3');
    db = new Database(file);
    db.defaultSafeIntegers(true);
  } else {
    const { DatabaseSync } = require('node:sqlite');
    db = new DatabaseSync(file);
  }
  db.exec(`PRAGMA journal_mode = WAL; PRAGMA synchronous = ${sync}; PRAGMA busy_timeout = 15000`);
  db.exec(`CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL);
           CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL, amount INTEGER NOT NULL, balance_after INTEGER NOT NULL)`);
  return { db, driver };
}

/** BEGIN IMMEDIATE; SELECT balance; UPDATE; INSERT entry (unique key); COMMIT — per operation, prepared statements. */
function naiveSqlite(sync, accounts) {
  const { db, driver } = openNaive(path.join(tmp, `naive-${sync}-${Date.now()}.sqlite`), sync);
  const ins = db.prepare('INSERT INTO accounts (id, balance) VALUES (?, ?)');
  for (const a of accounts) ins.run(a, 1_000_000_000_000n);
  const begin = db.prepare('BEGIN IMMEDIATE');
  const commit = db.prepare('COMMIT');
  const select = db.prepare('SELECT balance FROM accounts WHERE id = ?');
  const update = db.prepare('UPDATE accounts SET balance = ? WHERE id = ?');
  const entry = db.prepare('INSERT INTO entries (key, account_id, amount, balance_after) VALUES (?, ?, ?, ?)');
  if (driver === 'node:sqlite') select.setReadBigInts(true);
  let seq = 0;
  return {
    async slice(concurrency, n, seconds) {
      let ops = 0;
      const lat = [];
      const deadline = performance.now() + seconds * 1000;
      const started = performance.now();
      await Promise.all(
        Array.from({ length: concurrency }, async (_, lane) => {
          const id = accounts[lane % n];
          while (performance.now() < deadline) {
            const t = performance.now();
            begin.run();
            const [{ balance }] = select.all(id);
            const after = BigInt(balance) - 25_000n;
            update.run(after, id);
            entry.run(`k${seq++}`, id, -25_000n, after);
            commit.run();
            lat.push(performance.now() - t);
            ops++;
            // Callers interleave as the ledger's callers do.
            if (concurrency > 1) await null;
          }
        }),
      );
      return { ops, seconds: (performance.now() - started) / 1000, lat };
    },
    close: () => db.close(),
  };
}

// ---- PostgreSQL baseline: pgbench TPC-B-like, same server, its own database -----------------

function pgConn() {
  const u = new URL(PG);
  return { host: u.hostname || '127.0.0.1', port: u.port || '5432', user: decodeURIComponent(u.username || 'postgres'), password: decodeURIComponent(u.password) };
}

async function preparePgbench() {
  const { host, port, user, password } = pgConn();
  const admin = new Client({ host, port: Number(port), user, password: password || undefined, database: 'postgres' });
  await admin.connect();
  const { rows } = await admin.query("SELECT 1 FROM pg_database WHERE datname = 'flowise_billing_bench'");
  if (!rows[0]) await admin.query('CREATE DATABASE flowise_billing_bench');
  await admin.end();
  const env = { ...process.env, PGPASSWORD: password };
  execFileSync('pgbench', ['-h', host, '-p', port, '-U', user, '-i', '-q', '-s', '1', 'flowise_billing_bench'], { env, stdio: 'ignore' });
}

function pgbench(clients, seconds) {
  const { host, port, user, password } = pgConn();
  const r = spawnSync('pgbench', ['-n', '-h', host, '-p', port, '-U', user, '-c', String(clients), '-j', String(Math.min(clients, os.cpus().length)), '-T', String(seconds), 'flowise_billing_bench'], {
    env: { ...process.env, PGPASSWORD: password },
    encoding: 'utf8',
  });
  const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(r.stdout ?? '');
  if (!m) throw new Error(`pgbench failed: ${(r.stderr || r.stdout || '').slice(0, 500)}`);
  return { ops: Number(m[1]) * seconds, seconds };
}

/**
 * The least a client-decides operation costs on this driver: the customer's row locked and read (one
 * round trip, with BEGIN), then its update, a journal insert and COMMIT (the second), prepared and
 * pipelined as the ledger's are, on pgbench's tables, with no ledger logic. Beside pgbench it shows
 * what node-postgres itself costs here against pgbench's C client; beside the ledger, what the
 * ledger's own work costs. Printed for one client, where that is the whole story.
 */
async function nodeFloor() {
  const { host, port, user, password } = pgConn();
  const c = new Client({ host, port: Number(port), user, password: password || undefined, database: 'flowise_billing_bench', pipeline: true });
  await c.connect();
  const lock = 'SELECT abalance FROM pgbench_accounts WHERE aid = $1 FOR UPDATE';
  const update = 'UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2';
  const insert = 'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, $1, $2, CURRENT_TIMESTAMP)';
  const op = async () => {
    const aid = 1 + Math.floor(Math.random() * 100_000);
    const [, r] = await Promise.all([c.query('BEGIN'), c.query({ name: 'floor_lock', text: lock, values: [aid] })]);
    const delta = r.rows[0].abalance > 0 ? -1 : 1; // the write depends on what was read, as a hold's does
    await Promise.all([c.query({ name: 'floor_update', text: update, values: [delta, aid] }), c.query({ name: 'floor_insert', text: insert, values: [aid, delta] }), c.query('COMMIT')]);
  };
  return {
    async slice(seconds) {
      const started = performance.now();
      const end = started + seconds * 1000;
      let ops = 0;
      while (performance.now() < end) {
        await op();
        ops++;
      }
      return { ops, seconds: (performance.now() - started) / 1000 };
    },
    close: () => c.end(),
  };
}

async function dropBenchSchema() {
  const { host, port, user, password } = pgConn();
  const c = new Client({ host, port: Number(port), user, password: password || undefined, database: new URL(PG).pathname.slice(1) });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS ${benchSchema} CASCADE`);
  await c.end();
}

// ---- memory: RSS over many pairs ------------------------------------------------------------

async function memoryRun() {
  const ledger = await openLedger(path.join(tmp, `memory-${Date.now()}.sqlite`), { sqlite: { synchronous: 'NORMAL' } });
  const ids = ['mem-a', 'mem-b', 'mem-c', 'mem-d'];
  for (const id of ids) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000_000_000_000n, idempotencyKey: `seed-${id}` });
  }
  const lanes = 32;
  const perLane = Math.ceil(MEMORY_PAIRS / lanes);
  const samples = [];
  let done = 0;
  const step = Math.max(1, Math.floor(MEMORY_PAIRS / 10));
  const sample = () => {
    globalThis.gc?.();
    samples.push({ pairs: done, rssMb: process.memoryUsage().rss / 2 ** 20, heapMb: process.memoryUsage().heapUsed / 2 ** 20 });
  };
  sample();
  await Promise.all(
    Array.from({ length: lanes }, async (_, lane) => {
      for (let i = 0; i < perLane; i++) {
        const key = `m:${lane}:${i}`;
        const h = await ledger.hold({ customerId: ids[lane % ids.length], amount: 1_000_000n, idempotencyKey: key });
        await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${key}:s` });
        if (++done % step === 0) sample();
      }
    }),
  );
  await ledger.close();
  return samples;
}

// ---- run ------------------------------------------------------------------------------------

console.log(`flowise-billing ledger benchmark — ${os.cpus().length} cores, load ${os.loadavg()[0].toFixed(1)}, ${SECONDS}s per measurement, node ${process.version}, SQLite driver ${sqliteDriver()}`);
console.log('ledger: hold+settle pairs/s (2 operations each) and hold latency; ratio = ledger operations/s ÷ baseline transactions/s\n');
const rows = [];
const cases = [
  [1, 1],
  [32, 1],
  [32, 4],
];
for (const b of backends) {
  if (b.name === 'postgres') await ensurePgDatabaseOrExit(PG, BENCH_USAGE);
  const ledger = await openLedger(b.target(), b.opts);
  console.log(b.label);
  if (b.name === 'postgres') await preparePgbench();
  const customers = ['bench-a', 'bench-b', 'bench-c', 'bench-d'];
  for (const id of customers) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: 1_000_000_000_000n, idempotencyKey: `seed-${id}` });
  }
  const naive = b.name === 'sqlite' ? naiveSqlite(b.sync, customers) : null;
  const floor = b.name === 'postgres' ? await nodeFloor() : null;
  await floor?.slice(1);
  if (WARMUP > 0) {
    // Steady state, as pgbench's compiled loop has from its first transaction: a process's first few thousand
    // operations are slower (JIT tiers, V8's new space still growing, the WAL file still being extended), so the
    // warm-up's own figures are printed, not mixed into the cases'. At most 5 s per half: with FULL (an fsync
    // per commit) the full count would take minutes.
    const t = performance.now();
    const w = await measure(ledger, 1, customers.slice(0, 1), 'warm1', 5, WARMUP / 2);
    const w32 = await measure(ledger, 32, customers, 'warm32', 5, WARMUP / 2);
    await naive?.slice(1, 1, 0.25);
    console.log(
      `  (warm-up: ${w.pairs} pairs alone and ${w32.pairs} at 32 callers, ${((performance.now() - t) / 1000).toFixed(1)} s; its lone pairs ${w.pairsPerSec}/s, ` +
        `hold p50 ${ms(w.p50)}  p99 ${ms(w.p99)}; BENCH_WARMUP=0 measures from a cold start)`,
    );
  }
  for (const [concurrency, n] of cases) {
    const custs = customers.slice(0, n);
    // pgbench is a process of its own (slices of 1 s); the SQLite loop runs in-process (slices of 0.25 s).
    const sliceSeconds = b.name === 'postgres' ? 1 : 0.25;
    const { baseline, baseLatency, floor: floorTps, r } = await interleaved(
      Math.max(1, Math.round(SECONDS / sliceSeconds)),
      sliceSeconds,
      async (i, sec) =>
        b.name === 'sqlite' ? naive.slice(concurrency, n, sec) : { ...pgbench(concurrency, sec), floor: concurrency === 1 ? await floor.slice(sec) : undefined },
      (i, sec) => measure(ledger, concurrency, custs, `c${concurrency}x${n}:${i}`, sec),
    );
    const baseName = b.name === 'postgres' ? 'pgbench tps' : 'naive ops/s';
    rows.push({ backend: b.label, concurrency, customers: n, ...r, baseline, baselineName: baseName, ratio: r.opsPerSec / baseline, baseLatency, nodeFloor: floorTps });
    console.log(
      `  callers ${String(concurrency).padStart(2)} customers ${n}  ${String(r.pairsPerSec).padStart(6)} pairs/s = ${String(r.opsPerSec).padStart(6)} ops/s` +
        `  | ${baseName} ${String(baseline).padStart(6)}  ratio ${ratio(r.opsPerSec, baseline).padStart(6)}  | hold p50 ${ms(r.p50)}  p99 ${ms(r.p99)}  p99.9 ${ms(r.p999)}` +
        (baseLatency ? `  (naive transaction p50 ${ms(baseLatency.p50)}  p99 ${ms(baseLatency.p99)}  p99.9 ${ms(baseLatency.p999)})` : ''),
    );
    if (floorTps) {
      console.log(
        `      node-postgres floor (lock + read, then write + COMMIT: 2 round trips, no ledger logic) ${floorTps} ops/s = ${ratio(floorTps, baseline)} pgbench;` +
          ` the ledger ${ratio(r.opsPerSec, floorTps)} of it`,
      );
    }
  }
  naive?.close();
  await floor?.close();
  const check = await ledger.checkInvariants();
  if (!check.ok) throw new Error(`invariants broken after bench: ${JSON.stringify(check.violations.slice(0, 3))}`);
  await ledger.close();
  if (b.name === 'postgres') await dropBenchSchema();
}

if (MEMORY_PAIRS > 0 && (!only || only.includes('sqlite') || only.includes('memory'))) {
  const s = await memoryRun();
  const first = s[1] ?? s[0];
  const last = s.at(-1);
  console.log(`\nmemory: ${MEMORY_PAIRS} hold+settle pairs, 32 callers, SQLite${globalThis.gc ? ' (after gc)' : ' (run with --expose-gc for post-GC figures)'}`);
  console.log('  ' + s.map((x) => `${x.pairs}: ${x.rssMb.toFixed(0)} MB`).join('  '));
  console.log(`  RSS after first ${first.pairs} pairs ${first.rssMb.toFixed(0)} MB, after ${last.pairs}: ${last.rssMb.toFixed(0)} MB (growth ${(last.rssMb - first.rssMb).toFixed(0)} MB); heap ${first.heapMb.toFixed(0)} → ${last.heapMb.toFixed(0)} MB`);
  rows.push({ memory: s });
}
fs.rmSync(tmp, { recursive: true, force: true });
if (process.env.BENCH_JSON) fs.writeFileSync(process.env.BENCH_JSON, JSON.stringify(rows, null, 2));
