import { BillingError, isBillingError } from '../errors';
import { formatUsd, type Nanos } from '../money';

/**
 * Everything the CLI prints goes through here: one JSON object with --json,
 * readable aligned text without it, and errors as one JSON object (stdout,
 * --json) or one `error[CODE]: message` line (stderr). Never a stack trace.
 */

/** What a command produces; the runner picks the form. */
export interface Rendered {
  readonly json: Record<string, unknown>;
  readonly human: () => string;
}

export interface Io {
  out(text: string): void;
  err(text: string): void;
  readonly env: NodeJS.ProcessEnv;
}

export const processIo: Io = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  env: process.env,
};

/**
 * A reader that goes away (`flowise-billing --help | head -1`) closes the pipe:
 * that ends the output, not the program with an EPIPE stack trace.
 */
export function quietOnClosedPipe(): void {
  for (const stream of [process.stdout, process.stderr]) {
    if (stream.listenerCount('error') > 0) continue;
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
}

// ---- formats -------------------------------------------------------------

export const FORMATS = ['table', 'csv', 'tsv', 'json'] as const;
export type Format = (typeof FORMATS)[number];

/**
 * How tables and key/value lists render this run: `table` fits aligned text
 * into `width` columns (a terminal's width; unlimited in a pipe); csv/tsv print
 * every value in full for spreadsheets and `cut`.
 */
interface RenderSettings {
  format: Format;
  width: number;
  /** csv/tsv: what the current command printed, in order. */
  captured: Array<{ kind: 'table' | 'pairs'; text: string }>;
}
const settings: RenderSettings = { format: 'table', width: Infinity, captured: [] };

export function configureRendering(format: Format, width: number | undefined): void {
  settings.format = format;
  settings.width = width && width >= 40 ? width : Infinity;
  settings.captured = [];
}

/** The columns a table may use: $COLUMNS, else the terminal's width, else unlimited (a pipe or file). */
export function terminalWidth(env: NodeJS.ProcessEnv, stdout: { isTTY?: boolean; columns?: number } = process.stdout): number | undefined {
  const fromEnv = Number(env.COLUMNS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return stdout.isTTY && stdout.columns ? stdout.columns : undefined;
}

const csvCell = (v: string) => (/[",\r\n]/.test(v) || /^\s|\s$/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
// TSV has no quoting: tabs and newlines inside a value become spaces.
const tsvCell = (v: string) => v.replace(/[\t\r\n]/g, ' ');

function delimited(rows: readonly (readonly string[])[]): string {
  return settings.format === 'tsv' ? rows.map((r) => r.map(tsvCell).join('\t')).join('\n') : rows.map((r) => r.map(csvCell).join(',')).join('\n');
}

/**
 * In csv/tsv mode, the delimited form of what `human()` printed: its tables
 * when it has any (the data), else its key/value pairs as `field,value` rows.
 */
export function renderDelimited(human: () => string): string {
  settings.captured = [];
  const text = human();
  const tables = settings.captured.filter((c) => c.kind === 'table');
  const pairs = settings.captured.filter((c) => c.kind === 'pairs');
  settings.captured = [];
  if (tables.length) return tables.map((t) => t.text).join('\n\n');
  if (pairs.length) return pairs.map((t) => t.text).join('\n');
  return delimited(text.split('\n').filter((l) => l !== '').map((l) => [l]));
}

export function renderMode(): Format {
  return settings.format;
}

// ---- amounts -------------------------------------------------------------

/** "$0.08", "-$0.08": USD for people. */
export function usd(n: Nanos): string {
  const s = formatUsd(n);
  return s.startsWith('-') ? `-$${s.slice(1)}` : `$${s}`;
}

/** "+$10.00", "-$0.08", "$0.00": a movement. */
export function signedUsd(n: Nanos): string {
  if (n === 0n) return '$0.00';
  return n > 0n ? `+${usd(n)}` : usd(n);
}

// ---- tables --------------------------------------------------------------

export type Align = 'left' | 'right';

export interface Column<R> {
  readonly header: string;
  readonly align?: Align;
  /**
   * When the table is wider than the terminal: `drop` columns go first (right
   * to left), then the widest text columns are shortened with "…"; `keep`
   * columns (ids to copy) and right-aligned ones (amounts) never are.
   * csv/tsv/json always have everything.
   */
  readonly narrow?: 'drop' | 'keep';
  readonly value: (row: R) => string | number | null | undefined;
}

const width = (s: string) => [...s].length;

function pad(s: string, w: number, align: Align): string {
  const fill = ' '.repeat(Math.max(0, w - width(s)));
  return align === 'right' ? fill + s : s + fill;
}

const GUTTER = '  ';

/**
 * A plain aligned table: header, a dash rule, rows. Every column starts at the
 * same offset on every line; numbers read best right-aligned.
 */
export function table<R>(columns: readonly Column<R>[], rows: readonly R[], opts: { indent?: string } = {}): string {
  if (settings.format === 'csv' || settings.format === 'tsv') {
    const text = delimited([columns.map((c) => c.header), ...rows.map((r) => columns.map((c) => raw(c.value(r))))]);
    settings.captured.push({ kind: 'table', text });
    return text;
  }
  const indent = opts.indent ?? '';
  const limit = settings.width - width(indent);
  const natural = (cols: readonly Column<R>[]) => cols.map((c) => Math.max(width(c.header), ...rows.map((r) => width(clean(c.value(r))))));
  const total = (ws: number[]) => ws.reduce((a, b) => a + b, 0) + GUTTER.length * Math.max(0, ws.length - 1);
  let shown = [...columns];
  for (let i = shown.length - 1; i >= 0 && total(natural(shown)) > limit; i--) {
    if (shown[i]!.narrow === 'drop') shown = shown.filter((_, j) => j !== i);
  }
  columns = shown;
  const cells = rows.map((r) => columns.map((c) => clean(c.value(r))));
  // Numbers (right-aligned: amounts, counts) are never shortened: a cut amount is a wrong amount.
  const widths = fit(natural(columns), limit, columns.map((c) => c.narrow === 'keep' || c.align === 'right'));
  for (const row of [...cells]) row.forEach((v, i) => (row[i] = truncate(v, widths[i]!)));
  const line = (values: string[]) =>
    indent + values.map((v, i) => pad(v, widths[i]!, columns[i]!.align ?? 'left')).join(GUTTER).replace(/\s+$/, '');
  const out = [line(columns.map((c, i) => truncate(c.header, widths[i]!))), indent + widths.map((w) => '-'.repeat(w)).join(GUTTER)];
  for (const row of cells) out.push(line(row));
  if (rows.length === 0) out.push(`${indent}(none)`);
  return out.join('\n');
}

/**
 * Column widths that fit `limit` characters: the widest column gives up
 * characters first, down to 6, so ids and amounts keep most of their width.
 */
function fit(widths: number[], limit: number, keep: boolean[]): number[] {
  const w = [...widths];
  const total = () => w.reduce((a, b) => a + b, 0) + GUTTER.length * Math.max(0, w.length - 1);
  while (total() > limit) {
    let widest = -1;
    for (let i = 0; i < w.length; i++) if (!keep[i] && (widest < 0 || w[i]! > w[widest]!)) widest = i;
    if (widest < 0 || w[widest]! <= 6) break;
    w[widest]! -= 1;
  }
  return w;
}

function truncate(s: string, w: number): string {
  return width(s) <= w ? s : `${[...s].slice(0, Math.max(1, w - 1)).join('')}…`;
}

function raw(v: string | number | null | undefined): string {
  return v === null || v === undefined ? '' : String(v);
}

function clean(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '';
  // One cell, one line: control characters would break the alignment.
  // eslint-disable-next-line no-control-regex
  return String(v).replace(/[\u0000-\u001f\u007f]/g, ' ');
}

/** `label  value` pairs, labels padded to one width. */
export function keyValues(pairs: ReadonlyArray<readonly [string, string | number | null | undefined]>, indent = ''): string {
  if (settings.format === 'csv' || settings.format === 'tsv') {
    const text = delimited(pairs.map(([k, v]) => [k, raw(v)]));
    settings.captured.push({ kind: 'pairs', text });
    return text;
  }
  const w = Math.max(0, ...pairs.map(([k]) => width(k)));
  return pairs.map(([k, v]) => `${indent}${pad(k, w, 'left')}${GUTTER}${clean(v)}`.replace(/\s+$/, '')).join('\n');
}

/** A section heading for longer human output (the demo). */
export function heading(title: string, underline = '-'): string {
  return `${title}\n${underline.repeat(width(title))}`;
}

/** "2026-11-23T09:41:07.123Z" → "2026-11-23 09:41:07" (UTC). */
export function shortTime(iso: string): string {
  return iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/Z$/, '');
}

// ---- JSON ------------------------------------------------------------------

/** One JSON object on one line. A bigint here is a bug upstream; it is written as a string rather than crashing. */
export function jsonLine(value: unknown): string {
  return `${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`;
}

// ---- errors ----------------------------------------------------------------

/** A failure the CLI reports: a billing error plus the process exit code (1 business/validation, 2 usage). */
class CliFailure extends Error {
  constructor(
    readonly error: BillingError,
    readonly exitCode: number,
  ) {
    super(error.message);
  }
}

/** Commander usage errors (unknown command/option, missing argument) as VALIDATION_ERROR, exit 2. */
export function usageFailure(message: string, details: Record<string, unknown> = {}): CliFailure {
  return new CliFailure(new BillingError('VALIDATION_ERROR', message, { usage: true, ...details }), 2);
}

/** Anything thrown becomes a CliFailure; unknown errors keep only their message. */
export function toFailure(e: unknown): CliFailure {
  if (e instanceof CliFailure) return e;
  if (isBillingError(e)) return new CliFailure(e, 1);
  const message = e instanceof Error ? e.message : String(e);
  // Not a billing outcome: a bug or an environment problem. The code set is closed, so it is reported as
  // INTERNAL_ERROR (CLI only) with the message and no stack (FLOWISE_BILLING_DEBUG=1 prints one on stderr).
  return new CliFailure(new BillingError('INTERNAL_ERROR', `Unexpected error: ${message}`, {}), 1);
}

export function printFailure(io: Io, failure: CliFailure, json: boolean, cause?: unknown): void {
  const { code, message, details } = failure.error;
  if (json) io.out(jsonLine({ error: { code, message, details } }));
  else io.err(`error[${code}]: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (io.env.FLOWISE_BILLING_DEBUG && cause instanceof Error && cause.stack) io.err(`${cause.stack}\n`);
}
