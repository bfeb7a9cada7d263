/** `flowise-billing/ledger`: the ledger alone (SQLite or PostgreSQL), with the money helpers it speaks in. */
export type * from './types';
export { SqlLedger, type LedgerOptions } from './sql-ledger';
export { openLedger, defaultLedgerLocation, ledgerTarget, type LedgerTarget, type OpenLedgerOptions } from './open';
export { SCHEMA_VERSION } from './migrations';
export { formatUsd, parseUsd, type Nanos } from '../money';
