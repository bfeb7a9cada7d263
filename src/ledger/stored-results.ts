import { decodeResult, encodeResult, iso, msOfIso } from './rows';

/**
 * The text an idempotent operation's result is stored as, in its journal
 * entry (fold-rows.ts) or idempotency row, and read back by a replay.
 *
 * A hold or a charge, the results of nearly every operation, is stored
 * positionally: a one-letter tag, then a JSON array of its values in the
 * type's key order, amounts as digit strings and times as epoch ms. That is
 * about 130 bytes instead of 370, which is most of an entry row, so a journal
 * page holds twice the entries and an operation writes fewer new pages
 * (bench/sqlite-cost.mjs). Anything else, or a value this form would not give
 * back exactly (an unexpected key, a time that is not canonical ISO, metadata
 * holding a bigint), is stored as the JSON it always was; rows written before
 * are JSON too, and JSON never starts with these tags.
 */
export function storeResult(value: unknown): string {
  const shape = shapeOf(value);
  return shape ? packed(shape, value as Record<string, unknown>) ?? encodeResult(value) : encodeResult(value);
}

/** The value a stored result stands for, in either form. */
export function readStoredResult<T>(text: string): T {
  const shape = SHAPE_BY_TAG.get(text.charCodeAt(0));
  return (shape ? unpack(shape, text) : decodeResult(text)) as T;
}

/** s: string or null; b: bigint; t: ISO time; j: plain JSON (metadata, no bigints). */
type Kind = 's' | 'b' | 't' | 'j';

interface Shape {
  readonly tag: string;
  readonly keys: readonly string[];
  readonly kinds: readonly Kind[];
}

function shape(tag: string, fields: ReadonlyArray<readonly [string, Kind]>): Shape {
  return { tag, keys: fields.map((f) => f[0]), kinds: fields.map((f) => f[1]) };
}

// The key order of publicHold and publicCharge (rows.ts): a decoded value has the keys in this order.
const HOLD = shape('H', [
  ['id', 's'], ['customerId', 's'], ['amount', 'b'], ['status', 's'], ['expiresAt', 't'], ['createdAt', 't'],
  ['chargeType', 's'], ['quantity', 's'], ['rateCardVersion', 's'], ['chargeId', 's'], ['availableAfter', 'b'],
]);
const CHARGE = shape('C', [
  ['id', 's'], ['customerId', 's'], ['holdId', 's'], ['amount', 'b'], ['shortfall', 'b'], ['refunded', 'b'],
  ['chargeType', 's'], ['quantity', 's'], ['rateCardVersion', 's'], ['createdAt', 't'], ['balanceAfter', 'b'], ['metadata', 'j'],
]);
const SHAPE_BY_TAG = new Map([HOLD, CHARGE].map((s) => [s.tag.charCodeAt(0), s]));

/** The shape whose keys the value has, exactly and in order (a cheap first test: the key count and the distinguishing key). */
function shapeOf(value: unknown): Shape | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value) || Object.getPrototypeOf(value) !== Object.prototype) return null;
  const keys = Object.keys(value);
  const s = keys.length === HOLD.keys.length && keys[3] === 'status' ? HOLD : keys.length === CHARGE.keys.length && keys[2] === 'holdId' ? CHARGE : null;
  if (s === null) return null;
  for (let i = 0; i < keys.length; i++) if (keys[i] !== s.keys[i]) return null;
  return s;
}

/** The packed text, or null when some value would not come back exactly as it is. */
function packed(s: Shape, o: Record<string, unknown>): string | null {
  const out = new Array<unknown>(s.keys.length);
  for (let i = 0; i < s.keys.length; i++) {
    const v = o[s.keys[i]!];
    switch (s.kinds[i]) {
      case 's':
        if (v !== null && typeof v !== 'string') return null;
        out[i] = v;
        break;
      case 'b':
        if (typeof v !== 'bigint') return null;
        out[i] = v.toString();
        break;
      case 't': {
        const ms = typeof v === 'string' ? msOfIso(v) : NaN;
        if (Number.isNaN(ms)) return null;
        out[i] = ms;
        break;
      }
      case 'j':
        if (typeof v !== 'object' || v === null) return null;
        out[i] = v;
        break;
    }
  }
  try {
    return s.tag + JSON.stringify(out);
  } catch {
    // Caller-supplied metadata holding a bigint: only the boxing JSON form keeps it.
    return null;
  }
}

function unpack(s: Shape, text: string): Record<string, unknown> {
  const values = JSON.parse(text.slice(1)) as unknown[];
  const o: Record<string, unknown> = {};
  for (let i = 0; i < s.keys.length; i++) {
    const v = values[i];
    const k = s.kinds[i];
    o[s.keys[i]!] = k === 'b' ? BigInt(v as string) : k === 't' ? iso(v as number) : v;
  }
  return o;
}

/**
 * An operation's fingerprint as stored: `~` and its parts as JSON, amounts
 * as digit strings, trailing nulls left out (each kind's parts have fixed
 * places and types, so this says as much as the boxing JSON, in half the bytes).
 */
export function storedFingerprint(parts: readonly unknown[]): string {
  let n = parts.length;
  while (n > 0 && (parts[n - 1] === null || parts[n - 1] === undefined)) n--;
  const out = new Array<unknown>(n);
  for (let i = 0; i < n; i++) {
    const v = parts[i];
    out[i] = typeof v === 'bigint' ? v.toString() : (v ?? null);
  }
  return '~' + JSON.stringify(out);
}

/** Whether a stored fingerprint is this operation's: `fingerprint` is storedFingerprint(parts); rows from before it hold the boxing JSON. */
export function sameFingerprint(stored: string, fingerprint: string, parts: readonly unknown[]): boolean {
  return stored.charCodeAt(0) === TILDE ? stored === fingerprint : stored === encodeResult(parts);
}

const TILDE = '~'.charCodeAt(0);

/**
 * An audit line kept in its journal entry (fold-rows.ts), as stored: its
 * leading `holdId` and then `chargeId`, when they are the entry's own
 * columns, are left out and marked by `h` and `c` before the JSON (which
 * starts with `{`), about a third of the text.
 */
export function storedAuditDetails(details: Record<string, unknown>, holdId: string | null, chargeId: string | null): string {
  const keys = Object.keys(details);
  let mark = '';
  if (holdId !== null && keys[0] === 'holdId' && details.holdId === holdId) mark += 'h';
  if (chargeId !== null && keys[mark.length] === 'chargeId' && details.chargeId === chargeId) mark += 'c';
  if (mark === '') return JSON.stringify(details);
  const rest: Record<string, unknown> = {};
  for (let k = mark.length; k < keys.length; k++) rest[keys[k]!] = details[keys[k]!];
  return mark + JSON.stringify(rest);
}

/** An audit line's details from an entry's stored text (storedAuditDetails) and its hold and charge ids. */
export function readAuditDetails(text: string, holdId: string | null, chargeId: string | null): Record<string, unknown> {
  if (text[0] === '{') return JSON.parse(text) as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  const held = text[0] === 'h';
  if (held) out.holdId = holdId;
  if (text[held ? 1 : 0] === 'c') out.chargeId = chargeId;
  return Object.assign(out, JSON.parse(text.slice(text.indexOf('{'))) as Record<string, unknown>);
}

/**
 * Schema step 8 changes no table: it records that results, fingerprints and
 * audit details may be stored in the forms above. A binary from before
 * cannot read them (it would answer a replay with an error, or a retry with
 * an idempotency conflict), so it must refuse the database, as it refuses
 * any newer schema (SCHEMA_TOO_NEW), instead of sharing it during a rolling
 * upgrade.
 */
export const STORED_RESULTS_STEP = {
  version: 8,
  name: 'ledger: results, fingerprints and audit details kept in compact forms (no table changes; older binaries refuse the database)',
  statements: (): string[] => [],
} as const;
