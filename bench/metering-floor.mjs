// The metered step's floor: the least a LangChain handler does to pay for a model call before it is
// made and charge it after, written by hand. A same-run baseline for bench/metering.mjs's first figure.
//   before the call: the call's maximum priced (prompt estimate + max output tokens, the same rate card),
//     then one transaction: BEGIN IMMEDIATE; the balance; refuse if it does not cover it; held += it;
//     the hold inserted under its idempotency key; COMMIT
//   after: the call priced from its usage, then one transaction: BEGIN IMMEDIATE; the hold; the balance;
//     balance −= price, held −= hold; the hold closed; a journal entry under a unique key; COMMIT
// Same driver, page size, journal mode, synchronous and checkpoint interval as the ledger (src/ledger/sqlite.ts),
// prepared statements, tables of its own in a file of its own. No stored results, audit lines, charge rows,
// per-customer indexes or run state: what the plugin does beyond this is what its features cost.
import { createRequire } from 'node:module';
import path from 'node:path';

/** Opens the floor's database in `dir` and returns its handler (one customer, funded). */
export function meteringFloor({ dist, dir, card }) {
  const require = createRequire(path.join(path.resolve(dist), 'package.json'));
  const { sqliteDriver } = require(path.join(path.resolve(dist), 'src/ledger/sqlite.js'));
  const { priceTokens } = require(path.join(path.resolve(dist), 'src/pricing/price.js'));
  const { BaseCallbackHandler } = require('@langchain/core/callbacks/base');

  const file = path.join(dir, 'floor.sqlite');
  let db;
  if (sqliteDriver() === 'better-sqlite3') {
    const Database = require('better-sqlite3');
    db = new Database(file);
    db.defaultSafeIntegers(true);
  } else {
    const { DatabaseSync } = require('node:sqlite');
    db = new DatabaseSync(file);
  }
  // The ledger's settings (sqlite.ts: PAGE_SIZE, WAL_AUTOCHECKPOINT_PAGES).
  db.exec(`PRAGMA page_size = 2048; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 16000;
    CREATE TABLE accounts (id TEXT PRIMARY KEY, balance INTEGER NOT NULL, held INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE holds (key TEXT PRIMARY KEY, account_id TEXT NOT NULL, amount INTEGER NOT NULL, open INTEGER NOT NULL) WITHOUT ROWID;
    CREATE TABLE entries (seq INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, account_id TEXT NOT NULL, amount INTEGER NOT NULL, balance_after INTEGER NOT NULL);
    INSERT INTO accounts VALUES ('bench', 1000000000000000000, 0);`);
  const sql = (text) => {
    const st = db.prepare(text);
    st.setReadBigInts?.(true);
    return st;
  };
  const q = {
    begin: sql('BEGIN IMMEDIATE'),
    commit: sql('COMMIT'),
    rollback: sql('ROLLBACK'),
    account: sql('SELECT balance, held FROM accounts WHERE id = ?'),
    setHeld: sql('UPDATE accounts SET held = ? WHERE id = ?'),
    setBoth: sql('UPDATE accounts SET balance = ?, held = ? WHERE id = ?'),
    hold: sql('INSERT INTO holds VALUES (?, ?, ?, 1)'),
    getHold: sql('SELECT account_id, amount, open FROM holds WHERE key = ?'),
    close: sql('UPDATE holds SET open = 0 WHERE key = ?'),
    entry: sql('INSERT INTO entries (key, account_id, amount, balance_after) VALUES (?, ?, ?, ?)'),
  };
  const transaction = (fn) => {
    q.begin.run();
    try {
      fn();
      q.commit.run();
    } catch (e) {
      q.rollback.run();
      throw e;
    }
  };
  const models = new Map();
  const text = (messages) => messages.flat().reduce((n, m) => n + String(m.content).length, 0);

  class FloorHandler extends BaseCallbackHandler {
    name = 'metering-floor';
    awaitHandlers = true;

    async handleChatModelStart(_llm, messages, runId, _parent, extra) {
      const params = extra?.invocation_params ?? {};
      models.set(runId, params.model);
      const amount = priceTokens(card, params.model, Math.ceil(text(messages) / 4) + 8, Number(params.max_tokens ?? 256)).amount;
      transaction(() => {
        const a = q.account.get('bench');
        if (BigInt(a.balance) - BigInt(a.held) < amount) throw new Error('insufficient funds');
        q.setHeld.run(BigInt(a.held) + amount, 'bench');
        q.hold.run(`${runId}:hold`, 'bench', amount);
      });
    }

    async handleLLMEnd(output, runId) {
      const usage = output.generations?.[0]?.[0]?.message?.usage_metadata ?? {};
      const model = models.get(runId);
      models.delete(runId);
      const price = priceTokens(card, model, usage.input_tokens ?? 0, usage.output_tokens ?? 0).amount;
      transaction(() => {
        const h = q.getHold.get(`${runId}:hold`);
        if (!h || !h.open) throw new Error('no open hold');
        const a = q.account.get(h.account_id);
        const after = BigInt(a.balance) - price;
        q.setBoth.run(after, BigInt(a.held) - BigInt(h.amount), h.account_id);
        q.close.run(`${runId}:hold`);
        q.entry.run(`${runId}:settle`, h.account_id, -price, after);
      });
    }
  }

  return {
    handler: new FloorHandler(),
    /** Nothing left held, and the balance is its journal: the floor booked what it was asked to. */
    check() {
      const a = q.account.get('bench');
      const sum = sql('SELECT COALESCE(SUM(amount), 0) AS s FROM entries').get().s;
      return BigInt(a.held) === 0n && BigInt(a.balance) === 1_000_000_000_000_000_000n + BigInt(sum);
    },
    close: () => db.close(),
  };
}
