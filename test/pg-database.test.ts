import { Client } from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { PG_BASE_URL } from './support/backends';
import { ensurePgDatabase } from './support/pg-database.mjs';

// What `npm test` and `npm run bench` do first on a fresh machine: create their PostgreSQL database, or say
// what to do when no server answers. Against the real server; each run makes a database of its own and drops it.
const usage = { what: 'The storage tests run against SQLite and PostgreSQL', skip: 'FB_BACKENDS=sqlite npm test' };
const name = `fb_ensure_${process.pid}_${Date.now()}`;
const urlOf = (db: string) => {
  const u = new URL(PG_BASE_URL);
  u.pathname = `/${db}`;
  u.search = '';
  return u.toString();
};

async function admin<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: urlOf('postgres') });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}
const exists = (db: string) => admin(async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [db])).rowCount === 1);

describe.skipIf(process.env.FB_BACKENDS !== undefined && !process.env.FB_BACKENDS.split(',').includes('postgres'))('ensurePgDatabase', () => {
  afterAll(() => admin((c) => c.query(`DROP DATABASE IF EXISTS "${name}"`)));

  it('creates a missing database once, and concurrent callers all succeed', async () => {
    expect(await exists(name)).toBe(false);
    const created = await Promise.all(Array.from({ length: 4 }, () => ensurePgDatabase(urlOf(name), usage)));
    expect(await exists(name)).toBe(true);
    // One of them made it; the others found it made, or lost the race to make it, and say so.
    expect(created.filter(Boolean)).toHaveLength(1);
    expect(await ensurePgDatabase(urlOf(name), usage)).toBe(false);
    // Usable: a connection to it works.
    const c = new Client({ connectionString: urlOf(name) });
    await c.connect();
    expect((await c.query('SELECT current_database() AS d')).rows[0].d).toBe(name);
    await c.end();
  });

  it('keeps the database name exactly, quotes and all', async () => {
    const odd = `${name}_"x"`;
    try {
      expect(await ensurePgDatabase(urlOf(encodeURIComponent(odd)), usage)).toBe(true);
      expect(await exists(odd)).toBe(true);
    } finally {
      await admin((c) => c.query(`DROP DATABASE IF EXISTS "${odd.replace(/"/g, '""')}"`));
    }
  });

  it('says what to do when no server answers, without the password', async () => {
    const err = await ensurePgDatabase('postgres://bench:s3cret-pw@127.0.0.1:1/whatever', usage).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toContain('No PostgreSQL server answers at 127.0.0.1:1 as bench (ECONNREFUSED)');
    expect(err!.message).toContain('FB_TEST_PG_URL');
    expect(err!.message).toContain('FB_BACKENDS=sqlite npm test');
    expect(err!.message).not.toContain('s3cret');
    // Where there is no SQLite side (queue mode's topology), the error offers none.
    const bare = await ensurePgDatabase('postgres://bench@127.0.0.1:1/whatever', { what: 'Queue mode needs PostgreSQL' }).catch((e: Error) => e);
    expect((bare as Error).message).toContain('Queue mode needs PostgreSQL. Either:');
    expect((bare as Error).message).not.toContain('SQLite side');
  });
});
