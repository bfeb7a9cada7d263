// The same-run baselines of bench/plugin-prediction.mjs: what a metered prediction's durable writes cost
// when written by hand, with no ledger, on the same server and driver. Each books what the plugin books
// for one prediction: a session counted against its plan's limit (the conversation and session recorded),
// a hold taken only if the balance covers it, then the call's charge and the run fee captured from it and
// the rest released, each charge and the hold with a journal row under a unique idempotency key.
//   floor   the decisions made by the server: one statement before the call (session + hold) and one after
//           (capture + fee + release), each its own transaction: 2 statements, 2 round trips, 2 commits.
//           No design that pays before the call and writes durably per prediction can do with less.
//   naive   the decisions made by the client, one transaction per step (admission, hold, capture), each
//           BEGIN; SELECT … FOR UPDATE; writes; COMMIT, one statement per round trip (the way #10's SQLite
//           baseline works).
// Tables of its own in a schema of its own (never the ledger's). Exports runBaseline for plugin-prediction, and
// floorMeter for the floor build that bench/queue-floor.mjs runs in queue mode.
import fs from 'node:fs';

const DDL = `
CREATE TABLE customers (id TEXT PRIMARY KEY, balance BIGINT NOT NULL, held BIGINT NOT NULL);
CREATE TABLE subscriptions (customer_id TEXT PRIMARY KEY, sessions_used INTEGER NOT NULL, sessions_limit INTEGER NOT NULL);
CREATE TABLE conversations (customer_id TEXT NOT NULL, conversation_id TEXT NOT NULL, session_id TEXT NOT NULL, last_activity_at BIGINT NOT NULL, PRIMARY KEY (customer_id, conversation_id));
CREATE TABLE sessions (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, conversation_id TEXT NOT NULL, started_at BIGINT NOT NULL);
CREATE TABLE holds (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, amount BIGINT NOT NULL, status TEXT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX holds_pending ON holds (customer_id, expires_at) WHERE status = 'pending';
CREATE TABLE charges (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, hold_id TEXT NOT NULL, amount BIGINT NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE entries (id BIGSERIAL PRIMARY KEY, customer_id TEXT NOT NULL, type TEXT NOT NULL, amount BIGINT NOT NULL, balance_after BIGINT NOT NULL,
  hold_id TEXT, idempotency_key TEXT NOT NULL UNIQUE, created_at BIGINT NOT NULL);
CREATE INDEX entries_customer ON entries (customer_id, created_at);
`;

/** The baselines' schema and tables; `set` is SET (the session keeps the search path) or SET LOCAL (the transaction does). */
const createTables = (c, schema, set) => c.query(`CREATE SCHEMA ${schema}; ${set} search_path TO ${schema}; ${DDL}`);

/** Before the call: the session (within the limit) and the hold (within the balance), in one statement. */
const FLOOR_BEFORE = `WITH s AS (
  UPDATE subscriptions SET sessions_used = sessions_used + 1 WHERE customer_id = $1::text AND sessions_used < sessions_limit RETURNING 1
), v AS (
  INSERT INTO conversations (customer_id, conversation_id, session_id, last_activity_at) SELECT $1::text, $2::text, $3::text, $4::bigint FROM s
  ON CONFLICT (customer_id, conversation_id) DO UPDATE SET session_id = excluded.session_id, last_activity_at = excluded.last_activity_at
  RETURNING session_id
), n AS (
  INSERT INTO sessions (id, customer_id, conversation_id, started_at) SELECT session_id, $1::text, $2::text, $4::bigint FROM v
), c AS (
  UPDATE customers SET held = held + $5::bigint WHERE id = $1::text AND balance - held >= $5::bigint AND EXISTS (SELECT 1 FROM s) RETURNING balance, held
), h AS (
  INSERT INTO holds (id, customer_id, amount, status, expires_at) SELECT $6::text, $1::text, $5::bigint, 'pending', $4::bigint + 900000 FROM c
), e AS (
  INSERT INTO entries (customer_id, type, amount, balance_after, hold_id, idempotency_key, created_at) SELECT $1::text, 'hold', $5::bigint, balance, $6::text, $7::text, $4::bigint FROM c
)
SELECT (SELECT COUNT(*) FROM s) AS admitted, (SELECT COUNT(*) FROM c) AS held`;

/** After the call: the call's charge and the fee captured from the hold, the rest released, in one statement. */
const FLOOR_AFTER = `WITH h AS (
  UPDATE holds SET status = 'settled' WHERE id = $1::text AND status = 'pending' RETURNING customer_id, amount
), c AS (
  UPDATE customers f SET balance = f.balance - $2::bigint - $3::bigint, held = f.held - h.amount FROM h WHERE f.id = h.customer_id RETURNING f.id, f.balance
), ch AS (
  INSERT INTO charges (id, customer_id, hold_id, amount, created_at) SELECT $4::text, id, $1::text, $2::bigint, $6::bigint FROM c UNION ALL SELECT $5::text, id, $1::text, $3::bigint, $6::bigint FROM c
), e AS (
  INSERT INTO entries (customer_id, type, amount, balance_after, hold_id, idempotency_key, created_at)
  SELECT id, 'charge', $2::bigint, balance + $3::bigint, $1::text, $7::text, $6::bigint FROM c UNION ALL SELECT id, 'charge', $3::bigint, balance, $1::text, $8::text, $6::bigint FROM c
  UNION ALL SELECT c.id, 'release', h.amount - $2::bigint - $3::bigint, c.balance, $1::text, $9::text, $6::bigint FROM c, h
)
SELECT balance FROM c`;

const HOLD = 12_458_350n;
const CALL = 3_600n;
const FEE = 2_454_750n;

/** Funds a customer (and subscribes it) in the baselines' tables on `q`'s search path; a second time changes nothing. */
async function fund(q, customer) {
  await q.query('INSERT INTO customers VALUES ($1, $2, 0) ON CONFLICT DO NOTHING', [customer, String(10n ** 18n)]);
  await q.query('INSERT INTO subscriptions VALUES ($1, 0, 1000000000) ON CONFLICT DO NOTHING', [customer]);
}

/** The floor's statement before a call: session and hold, or an error when either was refused. */
async function floorBefore(pool, customer, conversation, hold, now) {
  const { rows } = await pool.query({ name: 'fb', text: FLOOR_BEFORE, values: [customer, conversation, `ses_${hold}`, now, HOLD, hold, `${hold}:reserve`] });
  if (Number(rows[0].held) !== 1) throw new Error('floor: refused');
}

/** The floor's statement after a call: the call and the fee captured from `hold`, the rest released. */
async function floorAfter(pool, hold, now) {
  const { rows } = await pool.query({ name: 'fa', text: FLOOR_AFTER, values: [hold, CALL, FEE, `c_${hold}`, `f_${hold}`, now, `${hold}:settle`, `${hold}:fee`, `${hold}:end`] });
  if (rows.length !== 1) throw new Error('floor: not captured');
}

async function floorPrediction(pool, customer, k) {
  const now = Date.now();
  await floorBefore(pool, customer, `chat-${k}`, `fh_${k}`, now);
  await floorAfter(pool, `fh_${k}`, now);
}

/** One transaction, one statement per round trip, decided by the client. */
async function naiveStep(pool, statements) {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    for (const s of statements) {
      const r = await c.query(typeof s === 'function' ? s(c.last) : s);
      c.last = r.rows[0] ?? c.last;
    }
    await c.query('COMMIT');
  } catch (e) {
    await c.query('ROLLBACK').catch(() => undefined);
    throw e;
  } finally {
    delete c.last;
    c.release();
  }
}

async function naivePrediction(pool, customer, k) {
  const now = Date.now();
  const hold = `nh_${k}`;
  await naiveStep(pool, [
    { name: 'n1', text: 'SELECT sessions_used, sessions_limit FROM subscriptions WHERE customer_id = $1 FOR UPDATE', values: [customer] },
    (s) => {
      if (s.sessions_used >= s.sessions_limit) throw new Error('naive: over the limit');
      return { name: 'n2', text: 'UPDATE subscriptions SET sessions_used = sessions_used + 1 WHERE customer_id = $1', values: [customer] };
    },
    { name: 'n3', text: 'INSERT INTO conversations (customer_id, conversation_id, session_id, last_activity_at) VALUES ($1, $2, $3, $4) ON CONFLICT (customer_id, conversation_id) DO UPDATE SET session_id = excluded.session_id, last_activity_at = excluded.last_activity_at', values: [customer, `chat-${k}`, `ses_${k}`, now] },
    { name: 'n4', text: 'INSERT INTO sessions (id, customer_id, conversation_id, started_at) VALUES ($1, $2, $3, $4)', values: [`ses_${k}`, customer, `chat-${k}`, now] },
  ]);
  await naiveStep(pool, [
    { name: 'n5', text: 'SELECT balance, held FROM customers WHERE id = $1 FOR UPDATE', values: [customer] },
    (c) => {
      if (BigInt(c.balance) - BigInt(c.held) < HOLD) throw new Error('naive: short of funds');
      return { name: 'n6', text: 'UPDATE customers SET held = held + $2 WHERE id = $1', values: [customer, HOLD] };
    },
    { name: 'n7', text: "INSERT INTO holds (id, customer_id, amount, status, expires_at) VALUES ($1, $2, $3, 'pending', $4)", values: [hold, customer, HOLD, now + 900_000] },
    { name: 'n8', text: "INSERT INTO entries (customer_id, type, amount, balance_after, hold_id, idempotency_key, created_at) VALUES ($1, 'hold', $2, 0, $3, $4, $5)", values: [customer, HOLD, hold, `${hold}:reserve`, now] },
  ]);
  await naiveStep(pool, [
    { name: 'n9', text: 'SELECT balance, held FROM customers WHERE id = $1 FOR UPDATE', values: [customer] },
    { name: 'n10', text: "UPDATE holds SET status = 'settled' WHERE id = $1 AND status = 'pending'", values: [hold] },
    { name: 'n11', text: 'UPDATE customers SET balance = balance - $2, held = held - $3 WHERE id = $1', values: [customer, CALL + FEE, HOLD] },
    { name: 'n12', text: 'INSERT INTO charges (id, customer_id, hold_id, amount, created_at) VALUES ($1, $3, $4, $5, $7), ($2, $3, $4, $6, $7)', values: [`nc_${k}`, `nf_${k}`, customer, hold, CALL, FEE, now] },
    {
      name: 'n13',
      text: "INSERT INTO entries (customer_id, type, amount, balance_after, hold_id, idempotency_key, created_at) VALUES ($1, 'charge', $2, 0, $4, $5, $8), ($1, 'charge', $3, 0, $4, $6, $8), ($1, 'release', 0, 0, $4, $7, $8)",
      values: [customer, CALL, FEE, hold, `${hold}:settle`, `${hold}:fee`, `${hold}:end`, now],
    },
  ]);
}

export const BASELINES = { floor: floorPrediction, naive: naivePrediction };

/** floorMeter's modes (bench/queue-floor.mjs's FB_FLOOR). */
export const FLOOR_MODES = ['sync', 'async', 'skip'];

/**
 * The floor as a metered model's bookings inside Flowise (bench/queue-floor.mjs): `before` books the
 * session and the hold for one call and returns the hold's id, `after` captures the call and the fee
 * from it. Tables in `schema` of `url`'s database, made by whichever worker comes first (an advisory
 * lock: both race), each customer funded on first sight. `mode`: sync (commits wait for the log, as a
 * hold must), async (they do not), skip (no statement at all: what the node costs without bookings).
 */
export function floorMeter(pg, url, { schema, mode = 'sync' }) {
  if (!FLOOR_MODES.includes(mode)) throw new Error(`floor mode must be ${FLOOR_MODES.join(', ')}, got ${mode}`);
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`floor schema must be a plain lower-case name, got ${schema}`);
  const u = new URL(url);
  u.searchParams.delete('schema');
  const pool = new pg.Pool({ connectionString: u.toString(), max: 8, options: `-c search_path=${schema}${mode === 'async' ? ' -c synchronous_commit=off' : ''}` });
  const ready = (async () => {
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock(hashtext($1))', [schema]);
      const { rows } = await c.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
      if (rows.length === 0) await createTables(c, schema, 'SET LOCAL');
      await c.query('COMMIT');
    } catch (e) {
      await c.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      c.release();
    }
  })();
  const funded = new Map();
  const fundOnce = (customer) => {
    if (!funded.has(customer)) funded.set(customer, fund(pool, customer));
    return funded.get(customer);
  };
  let k = 0;
  return {
    async before(customer, conversation) {
      if (mode === 'skip') return 'skip';
      await ready;
      await fundOnce(customer);
      const hold = `fq_${process.pid}_${Date.now()}_${k++}`;
      await floorBefore(pool, customer, conversation, hold, Date.now());
      return hold;
    },
    async after(hold) {
      if (hold !== 'skip') await floorAfter(pool, hold, Date.now());
    },
  };
}

/**
 * Runs `n` predictions of baseline `kind` from `clients` concurrent callers over `customers`, in a fresh
 * schema of its own, after a warm-up; returns statements, client CPU ms and server CPU ms per prediction
 * (`serverCpu()` reads the database backends' CPU, as plugin-prediction does for the ledger).
 */
export async function runBaseline(pg, { url, kind, n, clients, customers, serverCpu, poolSize = 8 }) {
  const schema = `ppb_${kind}_${process.pid}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  await createTables(admin, schema, 'SET');
  for (const id of customers) await fund(admin, id);
  const pool = new pg.Pool({ connectionString: url, max: poolSize, options: `-c search_path=${schema}` });
  let statements = 0;
  pool.on('connect', (c) => {
    const q = c.query;
    c.query = function (...a) {
      statements++;
      return q.apply(this, a);
    };
  });
  const one = BASELINES[kind];
  const phase = async (from, count) => {
    let next = from;
    await Promise.all(Array.from({ length: clients }, async () => {
      while (next < from + count) {
        const k = next++;
        await one(pool, customers[k % customers.length], k);
      }
    }));
  };
  try {
    await phase(0, 50);
    statements = 0;
    const server0 = await serverCpu();
    const cpu0 = process.cpuUsage();
    await phase(1_000, n);
    const cpu = process.cpuUsage(cpu0);
    const serverMs = (await serverCpu()) - server0;
    return { statements: statements / n, cpuMs: (cpu.user + cpu.system) / 1000 / n, serverMs: serverMs / n };
  } finally {
    await pool.end();
    await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await admin.end();
  }
}

/** The CPU (ms) the database backends of `monitor`'s database have used so far, from /proc (the server must run here). */
export function backendCpuReader(monitor, tickMs) {
  const seen = new Map();
  return async () => {
    const { rows } = await monitor.query('SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()');
    for (const r of rows) {
      try {
        const f = fs.readFileSync(`/proc/${r.pid}/stat`, 'utf8').split(') ')[1].split(' ');
        seen.set(r.pid, Number(f[11]) + Number(f[12]));
      } catch {
        // Exited: its last reading stays counted.
      }
    }
    let ticks = 0;
    for (const t of seen.values()) ticks += t;
    return ticks * tickMs;
  };
}
