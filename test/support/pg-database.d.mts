export interface DatabaseUsage {
  /** Who needs the database, as the error's first sentence: "The storage tests run against SQLite and PostgreSQL". */
  readonly what: string;
  /** How to do without PostgreSQL, where there is a SQLite side: "FB_BACKENDS=sqlite npm test". */
  readonly skip?: string;
}
export function describeServer(url: URL): string;
export function ensurePgDatabase(connectionString: string, usage: DatabaseUsage): Promise<boolean>;
export function ensurePgDatabaseOrExit(connectionString: string, usage: DatabaseUsage): Promise<boolean>;
