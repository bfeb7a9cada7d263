// SQLite ledger cost per operation in units that do not depend on the machine's load:
// WAL pages written per operation and SQL statements per operation, for one caller
// (one operation per transaction) and for 32 callers (group commit).
// Instructions per operation: run under callgrind with two sizes and subtract, e.g.
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null node bench/sqlite-cost.mjs --pairs 300 --quiet
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null node bench/sqlite-cost.mjs --pairs 1300 --quiet
//   (Ir difference ÷ 2000 operations).
// Runs against dist/ (npm run build first).
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { holdSettlePairs } from './pairs.mjs';

const require = createRequire(import.meta.url);
const { SqlLedger } = require('../dist/src/ledger/sql-ledger.js');
const { sqliteDialect } = require('../dist/src/ledger/sqlite.js');
const Database = require('better-sqlite3');

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const quiet = process.argv.includes('--quiet');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-cost-'));

/** A dialect whose write transactions count the statements they run. */
function counting(d, counter) {
  const wrap = (c) => ({
    query: (sql, p) => (counter.statements++, c.query(sql, p)),
    run: (sql, p) => (counter.statements++, c.run(sql, p)),
  });
  return { ...d, writeTransaction: (fn) => d.writeTransaction((c) => (counter.transactions++, fn(wrap(c)))) };
}

async function openCounted(file) {
  const counter = { statements: 0, transactions: 0 };
  const ledger = await SqlLedger.open(counting(sqliteDialect({ path: file, synchronous: 'NORMAL' }), counter));
  return { ledger, counter };
}

/** Frames now in the WAL, asked over a connection of its own (PASSIVE reports the log size; it blocks nobody). */
function walFrames(file) {
  const db = new Database(file);
  const [r] = db.prepare('PRAGMA wal_checkpoint(PASSIVE)').all();
  db.close();
  return r.log;
}
function truncateWal(file) {
  const db = new Database(file);
  db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').all();
  db.close();
}


/**
 * Pages and statements per operation. The WAL is emptied before each round and its frames counted after;
 * each round stays under the automatic checkpoint's size (a checkpoint would start the WAL over).
 */
async function perOp(lanes, pairsPerLane, rounds) {
  const file = path.join(tmp, `cost-${lanes}.sqlite`);
  const { ledger, counter } = await openCounted(file);
  await ledger.createCustomer({ id: 'c' });
  await ledger.topUp({ customerId: 'c', amount: 10n ** 15n, idempotencyKey: 'seed' });
  await holdSettlePairs(ledger, lanes, 5, 'warm');
  let frames = 0;
  let ops = 0;
  const before = { ...counter };
  for (let r = 0; r < rounds; r++) {
    truncateWal(file);
    await holdSettlePairs(ledger, lanes, pairsPerLane, `m${r}`);
    ops += 2 * lanes * pairsPerLane;
    frames += walFrames(file);
  }
  const tx = counter.transactions - before.transactions;
  const out = { lanes, ops, transactions: tx, pagesPerOp: frames / ops, pagesPerTx: frames / tx, statementsPerOp: (counter.statements - before.statements) / ops };
  await ledger.close();
  return out;
}

/** Which b-tree each WAL frame's page belongs to (dbstat), summed over the frames now in the WAL. */
function framesByTree(file) {
  const wal = fs.readFileSync(`${file}-wal`);
  const pageSize = wal.readUInt32BE(8);
  const db = new Database(file, { readonly: true });
  const owner = new Map(db.prepare('SELECT name, pageno FROM dbstat').all().map((r) => [r.pageno, r.name]));
  db.close();
  const out = new Map();
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    const page = wal.readUInt32BE(at);
    if (page === 0) break;
    const name = owner.get(page) ?? `page ${page}`;
    out.set(name, (out.get(name) ?? 0) + 1);
  }
  return out;
}

/** The pages one hold and one settle write, by b-tree (one caller, one operation per transaction). */
async function pagesByTree() {
  const file = path.join(tmp, 'by-tree.sqlite');
  const { ledger } = await openCounted(file);
  await ledger.createCustomer({ id: 'c' });
  await ledger.topUp({ customerId: 'c', amount: 10n ** 15n, idempotencyKey: 'seed' });
  await holdSettlePairs(ledger, 1, 20, 'warm');
  const show = (label, m) => console.log(`  ${label}: ${[...m.values()].reduce((a, b) => a + b, 0)} pages — ${[...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  truncateWal(file);
  const h = await ledger.hold({ customerId: 'c', amount: 1_000_000n, idempotencyKey: 'by-tree' });
  show('hold', framesByTree(file));
  truncateWal(file);
  await ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: 'by-tree:s' });
  show('settle', framesByTree(file));
  await ledger.close();
}

if (process.argv.includes('--pairs')) {
  // Instruction counting: a fixed amount of work, one caller.
  const file = path.join(tmp, 'ir.sqlite');
  const { ledger } = await openCounted(file);
  await ledger.createCustomer({ id: 'c' });
  await ledger.topUp({ customerId: 'c', amount: 10n ** 15n, idempotencyKey: 'seed' });
  await holdSettlePairs(ledger, arg('lanes', 1), arg('pairs', 300), 'ir');
  await ledger.close();
} else {
  console.log('WAL pages written by one operation, by b-tree:');
  await pagesByTree();
  for (const [lanes, n, rounds] of [[1, 20, 4], [32, 2, 4]]) {
    const r = await perOp(lanes, n, rounds);
    if (!quiet) {
      console.log(
        `callers ${String(lanes).padStart(2)}: ${r.ops} ops in ${r.transactions} transactions — ${r.pagesPerOp.toFixed(2)} WAL pages/op (${r.pagesPerTx.toFixed(1)}/transaction), ${r.statementsPerOp.toFixed(2)} statements/op`,
      );
    }
  }
}
fs.rmSync(tmp, { recursive: true, force: true });
