import { dropTestSchemas, PG_BASE_URL } from './backends';
import { describeServer, ensurePgDatabase } from './pg-database.mjs';

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

/** Creates the test database if it is missing; fails with what to do when no server answers. */
export async function ensureTestDatabase(connectionString: string): Promise<void> {
  const created = await ensurePgDatabase(connectionString, { what: 'The storage tests run against SQLite and PostgreSQL', skip: 'FB_BACKENDS=sqlite npm test' });
  const url = new URL(connectionString);
  if (created) console.log(`[global-setup] created PostgreSQL database ${decodeURIComponent(url.pathname.slice(1))} on ${describeServer(url)}`);
}
