import { type Dialect, placeholders, type Row } from './dialect';
import { LAST_SEQ_SQL } from './fold-rows';
import { outboxStateSql } from './outbox';
import { CHARGE_COLUMNS, CUSTOMER_COLUMNS, HOLD_COLUMNS } from './rows';

/**
 * A batch's reads after its customer lock (holds, stored results, the
 * Stripe outbox state) go to the database as one statement: a UNION ALL of
 * rows tagged `k`, in the holds' columns. One statement for the server to
 * run and answer, and one for the client to build and parse, instead of up
 * to three; and one snapshot for all of them, taken after the lock.
 * Each other read names the hold column that carries each of its columns
 * (text in text columns, integers in integer columns), and its rows are
 * rebuilt under their own names before anything reads them.
 */
type HoldColumn = (typeof HOLD_COLUMNS)[number];
type Carriers = Partial<Record<HoldColumn, string>>;

const IDEM: Carriers = {
  id: 'key', customer_id: 'customer_id', status: 'operation', created_at: 'created_at', charge_type: 'fingerprint', quantity: 'result',
};
/** A result stored in its journal entry (fold-rows.ts), read into IDEM's places (rebuilt under IDEM's names). */
const JOURNAL: Carriers = {
  id: 'idempotency_key', customer_id: 'customer_id', status: 'type', created_at: 'created_at', charge_type: 'fingerprint', quantity: 'result',
};
/** The columns of outbox.ts's outboxStateSql. */
const OUTBOX: Carriers = { id: 'settings', customer_id: 'customer_id', status: 'event_name', amount: 'nanos_total' };

// Every arm is aliased: whichever arm comes first names the statement's columns.
const select = (tag: string, carriers: Carriers | null) =>
  `SELECT '${tag}' AS k, ${HOLD_COLUMNS.map((col) => (carriers ? `${carriers[col] ?? 'NULL'} AS ${col}` : col)).join(', ')}`;
const HOLD_SELECT = select('h', null);
const IDEM_SELECT = select('i', IDEM);
const JOURNAL_SELECT = select('j', JOURNAL);
// Columns named, not `*`: a row's columns stay what this code reads whatever a later schema step appends.
const CUSTOMER_LIST = CUSTOMER_COLUMNS.join(', ');
const CHARGE_LIST = CHARGE_COLUMNS.join(', ');
const OUTBOX_SELECT = select('o', OUTBOX);

/** How many ids of each kind a batch names, and whether it may charge: all its load statements' text depends on. */
export interface LoadShape {
  readonly customers: number;
  readonly holds: number;
  readonly charges: number;
  readonly keys: number;
  readonly metering: boolean;
}

/** A batch's load statements; null where the batch has nothing to read. */
export interface LoadSql {
  /**
   * Locks the batch's customers; its parameters: customer ids, hold ids, charge ids. A writer that numbers
   * entries itself (`Dialect.explicitSeq`) reads the last number used with it, as `last_seq_`.
   */
  readonly lock: string | null;
  /**
   * The reads after the lock; its parameters: hold ids; if `lock`, its parameters again and `now`;
   * the keys twice (results in entries, then in idempotency rows); if `outbox`, outboxStateParams
   * for the same customers.
   */
  readonly reads: string | null;
  /** Charges by id; its parameters: the charge ids. */
  readonly charges: string | null;
  readonly outbox: boolean;
}

const inList = (n: number) => `(${placeholders(n)})`;
const loadCache = new Map<string | number, LoadSql>();

/**
 * The cache key of a shape: a number while every count is below 1024 (the usual batch; no string built
 * per batch), else text. Locking (`forUpdate`) is either nothing or FOR UPDATE.
 */
function shapeKey(d: Pick<Dialect, 'forUpdate' | 'explicitSeq'>, n: LoadShape): string | number {
  if (n.customers < 1024 && n.holds < 1024 && n.charges < 1024 && n.keys < 1024 && (d.forUpdate === '' || d.forUpdate === 'FOR UPDATE')) {
    const flags = (d.forUpdate === '' ? 0 : 4) + (d.explicitSeq ? 2 : 0) + (n.metering ? 1 : 0);
    return (((n.customers * 1024 + n.holds) * 1024 + n.charges) * 1024 + n.keys) * 8 + flags;
  }
  return `${d.forUpdate}/${d.explicitSeq ? 1 : 0}/${n.customers}/${n.holds}/${n.charges}/${n.keys}/${n.metering ? 1 : 0}`;
}

/** The statements' text, built once per shape and dialect (a lone hold or settle is always the same few). */
export function loadSql(d: Pick<Dialect, 'forUpdate' | 'explicitSeq'>, shape: LoadShape): LoadSql {
  const key = shapeKey(d, shape);
  let sql = loadCache.get(key);
  if (sql === undefined) {
    sql = buildLoadSql(d, shape);
    if (loadCache.size > 2000) loadCache.clear();
    loadCache.set(key, sql);
  }
  return sql;
}

function buildLoadSql(d: Pick<Dialect, 'forUpdate' | 'explicitSeq'>, n: LoadShape): LoadSql {
  const owners: string[] = [];
  // The named customers as bare values, not as a read of billing_customers: with that read in the lock's
  // subquery, a named customer whose row another process wrote while the lock waited could come back
  // missing from the lock (PostgreSQL's recheck of a concurrently updated row), and its operations failed
  // with "Customer … does not exist" (test/ledger.pg-batch-lock.test.ts). Its holds' owners come from
  // billing_holds, another table, and were never left out.
  if (n.customers) owners.push(Array.from({ length: n.customers }, () => 'SELECT CAST(? AS TEXT)').join(' UNION ALL '));
  if (n.holds) owners.push(`SELECT customer_id FROM billing_holds WHERE id IN ${inList(n.holds)}`);
  if (n.charges) owners.push(`SELECT customer_id FROM billing_charges WHERE id IN ${inList(n.charges)}`);
  // Operations that name their customers (hold, charge, top-up) need no subquery: a plain key list, cheaper to plan and run.
  const ownersSql = n.holds || n.charges ? owners.join(' UNION ALL ') : placeholders(n.customers);
  // Sorted lock order: concurrent batches in other processes can never deadlock on customers.
  const lastSeq = d.explicitSeq ? `, ${LAST_SEQ_SQL} AS last_seq_` : '';
  const lock = owners.length ? `SELECT ${CUSTOMER_LIST}${lastSeq} FROM billing_customers WHERE id IN (${ownersSql}) ORDER BY id ${d.forUpdate}` : null;

  // Holds named by the operations, and the locked customers' overdue ones (expired by this batch); the
  // operations' stored results, in their entries (fold-rows.ts; `fingerprint` is NULL on entries from
  // before it) and in idempotency rows (from before it, or of an operation without an entry); the
  // outbox state if the batch may charge. Arms of a UNION ALL rather
  // than an OR, so each arm keeps its index (a row in both hold arms is read twice, kept once).
  const arms: string[] = [];
  if (n.holds) arms.push(`${HOLD_SELECT} FROM billing_holds WHERE id IN ${inList(n.holds)}`);
  if (lock) arms.push(`${HOLD_SELECT} FROM billing_holds WHERE customer_id IN (${ownersSql}) AND status = 'pending' AND expires_at <= ?`);
  if (n.keys) {
    arms.push(`${JOURNAL_SELECT} FROM billing_entries WHERE idempotency_key IN ${inList(n.keys)} AND fingerprint IS NOT NULL`);
    arms.push(`${IDEM_SELECT} FROM billing_idempotency WHERE key IN ${inList(n.keys)}`);
  }
  const outbox = n.metering && lock !== null;
  if (outbox) arms.push(`${OUTBOX_SELECT} FROM (${outboxStateSql(ownersSql)}) o`);
  return {
    lock,
    reads: arms.length ? arms.join(' UNION ALL ') : null,
    charges: n.charges ? `SELECT ${CHARGE_LIST} FROM billing_charges WHERE id IN ${inList(n.charges)}` : null,
    outbox,
  };
}

function rebuild(r: Row, carriers: Carriers): Row {
  const out: Row = {};
  for (const col in carriers) out[carriers[col as HoldColumn]!] = r[col];
  return out;
}

/** The statement's rows, split by read, each under its own column names (a stored result's `journal`: 1 when kept in its entry). */
export function splitReads(rows: readonly Row[]): { holds: Row[]; idem: Row[]; outbox: Row[] } {
  const holds: Row[] = [];
  const idem: Row[] = [];
  const outbox: Row[] = [];
  for (const r of rows) {
    if (r.k === 'h') holds.push(r);
    else if (r.k === 'i' || r.k === 'j') {
      const row = rebuild(r, IDEM);
      row.journal = r.k === 'j' ? 1 : 0;
      idem.push(row);
    } else outbox.push(rebuild(r, OUTBOX));
  }
  return { holds, idem, outbox };
}
