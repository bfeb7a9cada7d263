import { Client } from 'pg';
import { dropTestSchemas, PG_BASE_URL } from './backends';

/**
 * Before the run: the PostgreSQL database the storage tests use exists (created when missing, so
 * `npm install && npm test` passes on a fresh machine with only a server running).
 * After it: importing backends sets FB_TEST_RUN, which the workers inherit, so every PostgreSQL
 * schema of this run carries it; the teardown drops exactly those.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const usesPostgres = !process.env.FB_BACKENDS || process.env.FB_BACKENDS.split(',').some((b) => b.trim() === 'postgres');
  if (usesPostgres) await ensureTestDatabase(PG_BASE_URL);
  return async () => {
    if (process.env.FB_KEEP_SCHEMAS || !usesPostgres) return;
    await dropTestSchemas().catch((e: Error) => console.warn(`could not drop test schemas: ${e.message}`));
  };
}

/** Where the server is, without the password (an error message must never carry one). */
function describeServer(url: URL): string {
  return `${url.hostname}:${url.port || 5432} as ${decodeURIComponent(url.username) || 'the current user'}`;
}

/** Creates the test database if it is missing; fails with what to do when no server answers. */
export async function ensureTestDatabase(connectionString: string): Promise<void> {
  const url = new URL(connectionString);
  const database = decodeURIComponent(url.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  admin.search = '';
  const c = new Client({ connectionString: admin.toString(), connectionTimeoutMillis: 5000 });
  try {
    await c.connect();
  } catch (e) {
    const code = (e as { code?: string }).code ?? (e as Error).message;
    throw new Error(
      [
        `No PostgreSQL server answers at ${describeServer(url)} (${code}).`,
        'The storage tests run against SQLite and PostgreSQL. Either:',
        '  - start a server with trust auth on 127.0.0.1:5432 (Debian: `pg_ctlcluster <version> main start`, or `bash .ci/run` which does it),',
        '  - or point FB_TEST_PG_URL at one (postgres://user@host:port/database; the database is created if missing),',
        '  - or run only the SQLite side: FB_BACKENDS=sqlite npm test.',
      ].join('\n'),
    );
  }
  try {
    const { rowCount } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (rowCount) return;
    const quoted = `"${database.replace(/"/g, '""')}"`;
    // Another run may create it between the check and here: duplicate_database (42P04, or 23505 from the catalog index) is success.
    await c.query(`CREATE DATABASE ${quoted}`).catch((e: { code?: string }) => {
      if (e.code !== '42P04' && e.code !== '23505') throw e;
    });
    console.log(`[global-setup] created PostgreSQL database ${database} on ${describeServer(url)}`);
  } finally {
    await c.end();
  }
}
