// node bench/pg-roundtrips.mjs: what one ledger operation costs on PostgreSQL, counted rather than timed.
//   statements/op   queries the driver sent (BEGIN and COMMIT included)
//   round trips/op  times the process waited for the server: a burst of queries sent without waiting
//                   for each other's answers (pipelined) is one round trip
// and, for scale, the time of one bare round trip (SELECT 1) and of one durable commit (an autocommit
// INSERT, which waits for the WAL fsync), measured on the same connection.
// Env: FB_TEST_PG_URL, BENCH_PAIRS (default 500).
import { createRequire } from 'node:module';
import { ensurePgDatabaseOrExit } from '../test/support/pg-database.mjs';

const require = createRequire(import.meta.url);
const pg = require('pg');
const { openLedger } = require('../dist/src/ledger/open.js');

const PG = process.env.FB_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/flowise_billing_test';
await ensurePgDatabaseOrExit(PG, { what: 'This benchmark measures PostgreSQL', skip: 'node bench/sqlite-cost.mjs' });
const PAIRS = Number(process.env.BENCH_PAIRS ?? 500);
const schema = `rt_${process.pid}_${Date.now()}`;

// Every query of every client goes through Client.prototype.query.
let statements = 0;
let roundTrips = 0;
let inFlight = 0;
const texts = new Map();
const original = pg.Client.prototype.query;
pg.Client.prototype.query = function (config, values, callback) {
  statements++;
  if (inFlight++ === 0) roundTrips++;
  const text = typeof config === 'string' ? config : config?.text ?? config?.name;
  const head = String(text).replace(/\s+/g, ' ').slice(0, 60);
  texts.set(head, (texts.get(head) ?? 0) + 1);
  const done = () => void inFlight--;
  // A statement answers through its callback (the ledger's) or its promise.
  const wrap = (fn) => (...args) => {
    done();
    return fn(...args);
  };
  if (typeof callback === 'function') return original.call(this, config, values, wrap(callback));
  if (typeof values === 'function') return original.call(this, config, wrap(values));
  const r = original.call(this, config, values, callback);
  if (r && typeof r.then === 'function') r.then(done, done);
  return r;
};

const ledger = await openLedger(`${PG}${PG.includes('?') ? '&' : '?'}schema=${schema}`);
await ledger.createCustomer({ id: 'rt-a' });
await ledger.topUp({ customerId: 'rt-a', amount: 1_000_000_000_000n, idempotencyKey: 'rt-seed' });

async function count(label, fn) {
  statements = 0;
  roundTrips = 0;
  texts.clear();
  await fn();
  return { label, statements, roundTrips };
}
const holds = [];
const h = await count('hold', async () => {
  for (let i = 0; i < PAIRS; i++) holds.push((await ledger.hold({ customerId: 'rt-a', amount: 1_000_000n, idempotencyKey: `rt:${i}` })).id);
});
const holdTexts = new Map(texts);
const s = await count('settle', async () => {
  for (let i = 0; i < PAIRS; i++) await ledger.settle({ holdId: holds[i], amount: 25_000n, idempotencyKey: `rt:${i}:s` });
});
const settleTexts = new Map(texts);
pg.Client.prototype.query = original;
const check = await ledger.checkInvariants();

const per = (n) => (n / PAIRS).toFixed(2);
console.log(`PostgreSQL ledger, 1 caller, ${PAIRS} operations of each kind (${PG.replace(/\/\/[^@]*@/, '//***@')})`);
for (const [r, t] of [[h, holdTexts], [s, settleTexts]]) {
  console.log(`  ${r.label.padEnd(6)} statements/op ${per(r.statements)}  round trips/op ${per(r.roundTrips)}`);
  for (const [text, n] of t) console.log(`           ${per(n)}× ${text}`);
}

// Scale: a bare round trip vs a durable commit, on one plain connection.
const c = new pg.Client({ connectionString: PG });
await c.connect();
await c.query(`CREATE TABLE IF NOT EXISTS ${schema}_probe (v int)`);
const time = async (n, q) => {
  const t = performance.now();
  for (let i = 0; i < n; i++) await c.query(q);
  return ((performance.now() - t) / n) * 1000;
};
await time(200, 'SELECT 1');
const rt = await time(2000, 'SELECT 1');
const commit = await time(1000, `INSERT INTO ${schema}_probe VALUES (1)`);
console.log(`  one round trip (SELECT 1) ${rt.toFixed(0)} µs; one durable commit (autocommit INSERT) ${commit.toFixed(0)} µs`);
await c.query(`DROP TABLE ${schema}_probe`);
await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
await c.end();
await ledger.close();
if (!check.ok) throw new Error(`invariants broken: ${JSON.stringify(check.violations.slice(0, 3))}`);
