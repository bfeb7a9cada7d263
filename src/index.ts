export * from './errors';
export * from './money';
export * from './pricing/ratecard';
export * from './pricing/price';
export type * from './ledger/types';
export { SqlLedger, type LedgerOptions } from './ledger/sql-ledger';
export { openLedger, defaultLedgerLocation, type OpenLedgerOptions } from './ledger/open';
export { SCHEMA_VERSION } from './ledger/migrations';
