import { BillingError, ValidationError } from '../errors';
import { defaultRateCard, parseRateCard, type RateCard } from '../pricing/ratecard';
import type { Dialect, Row, SqlConnection } from './dialect';
import { iso } from './rows';
import { appendAudit } from './within';
import type { RateCardRecord } from './types';

const RATE_CARD_CACHE_MS = 2_000;

/** What the rate cards borrow from their ledger: its database, clock and default actor, and its error-mapping read and write. */
export interface RateCardIo {
  readonly dialect: Dialect;
  readonly clock: () => number;
  readonly actor: string;
  read<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T>;
  write<T>(fn: (c: SqlConnection) => Promise<T>): Promise<T>;
}

/**
 * The ledger's rate cards: immutable versions, one active at a time (the
 * packaged default on first use), every import and activation audited. The
 * active card is cached for a moment, so pricing a step costs no query.
 */
export class RateCards {
  private current?: { card: RateCard; at: number };
  private readonly parsedCards = new Map<string, RateCard>();

  constructor(private readonly io: RateCardIo) {}

  async import(card: RateCard, opts: { activate?: boolean; actor?: string } = {}): Promise<RateCardRecord> {
    const doc = JSON.stringify(card.document);
    const now = this.io.clock();
    const record = await this.io.write<RateCardRecord>(async (c) => {
      const [existing] = await c.query('SELECT document FROM billing_rate_cards WHERE version = ?', [card.version]);
      if (existing && String(existing.document) !== doc) {
        throw new ValidationError(`Rate card version ${card.version} already exists with different prices; versions are immutable, give the new card a new version`, {
          field: 'version',
          version: card.version,
        });
      }
      if (!existing) {
        await c.run('INSERT INTO billing_rate_cards (version, document, imported_at, activated_at, active) VALUES (?, ?, ?, NULL, 0)', [card.version, doc, now]);
        await this.auditRow(c, opts.actor, 'importRateCard', card.version, { version: card.version });
      }
      if (opts.activate ?? true) await this.activateIn(c, card.version, opts.actor, now);
      return this.rateCardRecord(c, card.version);
    });
    this.current = undefined;
    return record;
  }

  async activate(version: string, opts: { actor?: string } = {}): Promise<RateCardRecord> {
    const now = this.io.clock();
    const record = await this.io.write<RateCardRecord>(async (c) => {
      const [existing] = await c.query('SELECT version FROM billing_rate_cards WHERE version = ?', [version]);
      if (!existing) throw new BillingError('RATE_CARD_NOT_FOUND', `Rate card version ${version} has not been imported`, { version });
      await this.activateIn(c, version, opts.actor, now);
      return this.rateCardRecord(c, version);
    });
    this.current = undefined;
    return record;
  }

  async active(): Promise<RateCard> {
    const now = this.io.clock();
    if (this.current && now - this.current.at < RATE_CARD_CACHE_MS) return this.current.card;
    let rows = await this.io.read<Row[]>((c) => c.query('SELECT version, document FROM billing_rate_cards WHERE active = 1'));
    if (!rows[0]) {
      // First use: the packaged default becomes the active card (once, even with racing processes).
      await this.io.write(async (c) => {
        const [any] = await c.query('SELECT version FROM billing_rate_cards WHERE active = 1');
        if (any) return;
        const card = defaultRateCard();
        await c.run('INSERT INTO billing_rate_cards (version, document, imported_at, activated_at, active) VALUES (?, ?, ?, NULL, 0) ON CONFLICT (version) DO NOTHING', [
          card.version,
          JSON.stringify(card.document),
          now,
        ]);
        await this.auditRow(c, 'system', 'importRateCard', card.version, { version: card.version, reason: 'default rate card on first use' });
        await this.activateIn(c, card.version, 'system', now);
      });
      rows = await this.io.read<Row[]>((c) => c.query('SELECT version, document FROM billing_rate_cards WHERE active = 1'));
    }
    const card = this.cachedParse(String(rows[0]!.version), String(rows[0]!.document));
    this.current = { card, at: now };
    return card;
  }

  async get(version: string): Promise<RateCard> {
    const rows = await this.io.read<Row[]>((c) => c.query('SELECT document FROM billing_rate_cards WHERE version = ?', [version]));
    if (!rows[0]) throw new BillingError('RATE_CARD_NOT_FOUND', `Rate card version ${version} has not been imported`, { version });
    return this.cachedParse(version, String(rows[0].document));
  }

  async list(): Promise<RateCardRecord[]> {
    const rows = await this.io.read<Row[]>((c) => c.query('SELECT version, active, imported_at, activated_at FROM billing_rate_cards ORDER BY imported_at, version'));
    return rows.map(rateCardRecordFromRow);
  }

  private cachedParse(version: string, document: string): RateCard {
    let card = this.parsedCards.get(version);
    if (!card) {
      card = parseRateCard(document);
      this.parsedCards.set(version, card);
    }
    return card;
  }

  private async activateIn(c: SqlConnection, version: string, who: string | undefined, now: number) {
    const [current] = await c.query('SELECT version FROM billing_rate_cards WHERE active = 1');
    if (current && String(current.version) === version) return;
    await c.run('UPDATE billing_rate_cards SET active = 0 WHERE active = 1');
    await c.run('UPDATE billing_rate_cards SET active = 1, activated_at = ? WHERE version = ?', [now, version]);
    await this.auditRow(c, who, 'activateRateCard', version, { version, previous: current ? String(current.version) : null });
  }

  private async rateCardRecord(c: SqlConnection, version: string): Promise<RateCardRecord> {
    const [r] = await c.query('SELECT version, active, imported_at, activated_at FROM billing_rate_cards WHERE version = ?', [version]);
    return rateCardRecordFromRow(r!);
  }

  private async auditRow(c: SqlConnection, who: string | undefined, operation: string, version: string | null, details: Record<string, unknown>) {
    await appendAudit(c, this.io.dialect, [
      {
        at: this.io.clock(),
        actor: who ?? this.io.actor,
        operation,
        idempotencyKey: version ? `ratecard:${operation}:${version}` : null,
        customerId: null,
        rateCardVersion: version,
        details,
      },
    ]);
  }
}

function rateCardRecordFromRow(r: Row): RateCardRecord {
  return {
    version: String(r.version),
    active: Number(r.active) === 1,
    importedAt: iso(Number(r.imported_at)),
    activatedAt: r.activated_at === null ? null : iso(Number(r.activated_at)),
  };
}
