import type { Row } from './dialect';
import { HOLD_COLUMNS } from './rows';

/**
 * A batch's reads after its customer lock (holds, idempotency rows, the
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
/** The columns of outbox.ts's outboxStateQuery. */
const OUTBOX: Carriers = { id: 'settings', customer_id: 'customer_id', status: 'event_name', amount: 'nanos_total' };

// Every arm is aliased: whichever arm comes first names the statement's columns.
const select = (tag: string, carriers: Carriers | null) =>
  `SELECT '${tag}' AS k, ${HOLD_COLUMNS.map((col) => `${carriers ? (carriers[col] ?? 'NULL') : col} AS ${col}`).join(', ')}`;
const HOLD_SELECT = select('h', null);
const IDEM_SELECT = select('i', IDEM);
const OUTBOX_SELECT = select('o', OUTBOX);

/** An arm reading holds: `rest` is its FROM billing_holds … clause. */
export const holdArm = (rest: string): string => `${HOLD_SELECT} ${rest}`;
/** An arm reading idempotency rows: `rest` is its FROM billing_idempotency … clause. */
export const idemArm = (rest: string): string => `${IDEM_SELECT} ${rest}`;
/** An arm reading the outbox state (outboxStateQuery's SQL). */
export const outboxArm = (sql: string): string => `${OUTBOX_SELECT} FROM (${sql}) o`;

function rebuild(r: Row, carriers: Carriers): Row {
  const out: Row = {};
  for (const col in carriers) out[carriers[col as HoldColumn]!] = r[col];
  return out;
}

/** The statement's rows, split by read, each under its own column names. */
export function splitReads(rows: readonly Row[]): { holds: Row[]; idem: Row[]; outbox: Row[] } {
  const holds: Row[] = [];
  const idem: Row[] = [];
  const outbox: Row[] = [];
  for (const r of rows) {
    if (r.k === 'h') holds.push(r);
    else if (r.k === 'i') idem.push(rebuild(r, IDEM));
    else outbox.push(rebuild(r, OUTBOX));
  }
  return { holds, idem, outbox };
}
