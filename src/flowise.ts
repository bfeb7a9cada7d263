/**
 * `flowise-billing/flowise`: what the Flowise nodes call (src/plugin), plus
 * the SQLite driver probe `doctor` runs inside Flowise's Node. The installer's
 * engine bundle is built from this file.
 */
export * from './plugin';
export { sqliteDriver } from './ledger/sqlite';
