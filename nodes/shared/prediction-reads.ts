/**
 * A metered chatflow prediction reads two rows of Flowise's own database: its
 * Billing Ledger credential (when the first billing node initialises) and the
 * chatflow's analytics settings (where the run reports costs to Langfuse, when
 * the run opens). Apart, they are two statements, two transactions and two
 * round trips on Flowise's connection, and TypeORM's query builder spends more
 * CPU on a one-row read than the database does; here they are one plain
 * statement, still made for every prediction (an edited credential or a
 * Langfuse switched on applies to the very next one).
 */
import { credentialDecryption, decryptedRow, type FlowiseComponents, type ICommonObject } from './flowise';

export interface CredentialAndAnalytic {
  /** The credential's decrypted data (`{}`: no such row). */
  readonly data: ICommonObject;
  /** The chatflow's analytic column as stored (null: empty, or no such chatflow). */
  readonly analytic: string | null;
}

interface ColumnLike {
  readonly databaseName: string;
}
interface MetadataLike {
  readonly tablePath: string;
  findColumnWithPropertyName(property: string): ColumnLike | undefined;
}
interface DataSourceLike {
  getMetadata(entity: unknown): MetadataLike;
  readonly driver: {
    escape(name: string): string;
    escapeQueryWithParameters(sql: string, parameters: ICommonObject, nativeParameters: ICommonObject): [string, unknown[]];
  };
  query(sql: string, parameters?: unknown[]): Promise<unknown>;
}

/** The statement per data source (null: its entities lack a column this needs). Built from TypeORM's metadata, so table prefixes, schemas and quoting are the database's. */
const statements = new WeakMap<object, string | null>();

function jointStatement(ds: DataSourceLike, credentialEntity: unknown, chatflowEntity: unknown): string | null {
  const q = (name: string) => ds.driver.escape(name);
  const table = (m: MetadataLike) => m.tablePath.split('.').map(q).join('.');
  const column = (m: MetadataLike, property: string) => {
    const c = m.findColumnWithPropertyName(property);
    if (!c) throw new Error(`no column for ${property}`);
    return q(c.databaseName);
  };
  try {
    const cred = ds.getMetadata(credentialEntity);
    const flow = ds.getMetadata(chatflowEntity);
    // Two scalar subqueries: one row whatever exists (a missing credential or chatflow reads as NULL).
    return (
      `SELECT (SELECT ${column(cred, 'encryptedData')} FROM ${table(cred)} WHERE ${column(cred, 'id')} = :credentialId) AS ${q('encryptedData')}, ` +
      `(SELECT ${column(flow, 'analytic')} FROM ${table(flow)} WHERE ${column(flow, 'id')} = :chatflowId) AS ${q('analytic')}`
    );
  } catch {
    return null;
  }
}

function isDataSource(ds: unknown): ds is DataSourceLike {
  const d = ds as Partial<DataSourceLike> | undefined;
  return typeof d?.query === 'function' && typeof d.getMetadata === 'function' && typeof d.driver?.escape === 'function' && typeof d.driver.escapeQueryWithParameters === 'function';
}

/**
 * The credential `credentialId` and the analytics settings of this prediction's
 * chatflow, in one statement; undefined when this Flowise cannot be read that
 * way or the statement failed (the caller then reads them as before, which
 * also reports a database that is down).
 */
export async function credentialAndAnalytic(credentialId: string, options: ICommonObject, fc?: FlowiseComponents): Promise<CredentialAndAnalytic | undefined> {
  const ds: unknown = options?.appDataSource;
  const entities = options?.databaseEntities;
  if (!credentialId || !options?.chatflowid || !entities?.Credential || !entities?.ChatFlow || !isDataSource(ds)) return undefined;
  const decrypt = credentialDecryption(fc);
  if (!decrypt) return undefined;
  let sql = statements.get(ds);
  if (sql === undefined) statements.set(ds, (sql = jointStatement(ds, entities.Credential, entities.ChatFlow)));
  if (sql === null) return undefined;
  let row: { encryptedData?: unknown; analytic?: unknown } | undefined;
  try {
    const [text, parameters] = ds.driver.escapeQueryWithParameters(sql, { credentialId, chatflowId: String(options.chatflowid) }, {});
    const rows = await ds.query(text, parameters);
    row = Array.isArray(rows) ? rows[0] : undefined;
  } catch {
    return undefined;
  }
  const analytic = typeof row?.analytic === 'string' && row.analytic ? row.analytic : null;
  return { data: await decryptedRow(credentialId, row?.encryptedData, decrypt), analytic };
}

/**
 * The analytics settings read with a credential, on the credential object itself: the installer bundles each
 * node file on its own, so a map kept in this module would exist once per node type, and the node that reads
 * the credential (e.g. a Metered Chat Model) need not be the one that opens the run (its Quota Guard).
 */
const ANALYTIC = Symbol.for('flowise-billing.chatflowAnalytic');

/** Remembers the analytics settings read together with `credential` (the object the prediction's nodes share). */
export function keepAnalyticWith(credential: object, analytic: string | null): void {
  // Not enumerable: the credential is spread and compared elsewhere, and this is no part of it.
  Object.defineProperty(credential, ANALYTIC, { value: analytic, enumerable: false });
}

/** The chatflow's analytic column as read with this prediction's credential; undefined when it was not (read it). */
export function analyticReadWith(credential: object): string | null | undefined {
  return (credential as { [ANALYTIC]?: string | null })[ANALYTIC];
}
