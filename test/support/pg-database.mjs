// The PostgreSQL database a test run or a benchmark uses: created when missing, so that `npm test` and
// `npm run bench` work on a fresh machine with only a server running; when no server answers, an error
// that says what to do instead of a driver's stack. Plain JavaScript: the benches import it without a build.
import pg from 'pg';

/** Where the server is, without the password (an error message must never carry one). */
export function describeServer(url) {
  return `${url.hostname}:${url.port || 5432} as ${decodeURIComponent(url.username) || 'the current user'}`;
}

/**
 * Creates the database `connectionString` names if it is missing. `usage` is who needs it, for the error:
 * { what: 'The storage tests run against SQLite and PostgreSQL', skip: 'FB_BACKENDS=sqlite npm test' } (`skip`
 * only where there is a SQLite side). Resolves to true when it created it.
 */
export async function ensurePgDatabase(connectionString, usage) {
  const url = new URL(connectionString);
  const database = decodeURIComponent(url.pathname.slice(1));
  const admin = new URL(url);
  admin.pathname = '/postgres';
  admin.search = '';
  const c = new pg.Client({ connectionString: admin.toString(), connectionTimeoutMillis: 5000 });
  try {
    await c.connect();
  } catch (e) {
    const code = e?.code ?? e?.message;
    throw new Error(
      [
        `No PostgreSQL server answers at ${describeServer(url)} (${code}).`,
        `${usage.what}. Either:`,
        '  - start a server with trust auth on 127.0.0.1:5432 (Debian: `pg_ctlcluster <version> main start`, or `bash .ci/run` which does it),',
        '  - or point FB_TEST_PG_URL at one (postgres://user@host:port/database; the database is created if missing),',
        ...(usage.skip ? [`  - or run only the SQLite side: ${usage.skip}.`] : []),
      ].join('\n'),
    );
  }
  try {
    const { rowCount } = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (rowCount) return false;
    const quoted = `"${database.replace(/"/g, '""')}"`;
    // Another run may create it between the check and here: duplicate_database (42P04, or 23505 from the catalog index) is success.
    return await c.query(`CREATE DATABASE ${quoted}`).then(
      () => true,
      (e) => {
        if (e.code !== '42P04' && e.code !== '23505') throw e;
        return false;
      },
    );
  } finally {
    await c.end();
  }
}

/** ensurePgDatabase for a script: when it cannot, prints why and what to do (no stack) and exits with 1. */
export async function ensurePgDatabaseOrExit(connectionString, usage) {
  try {
    return await ensurePgDatabase(connectionString, usage);
  } catch (e) {
    console.error(e.message);
    process.exit(1);
  }
}
