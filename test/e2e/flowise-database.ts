import pg from 'pg';
import { PG_BASE_URL } from '../support/backends';

/**
 * A database of its own on the shared PostgreSQL for the Flowise under test
 * (created here, dropped afterwards), and the environment that points Flowise at it.
 */
export async function flowiseDatabase(): Promise<{ env: Record<string, string>; drop(): Promise<void> }> {
  const url = new URL(PG_BASE_URL);
  const name = `fb_e2e_flowise_${process.pid}_${Date.now().toString(36)}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: PG_BASE_URL });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  return {
    env: {
      DATABASE_TYPE: 'postgres',
      DATABASE_HOST: url.hostname,
      DATABASE_PORT: url.port || '5432',
      DATABASE_USER: decodeURIComponent(url.username || 'postgres'),
      DATABASE_PASSWORD: decodeURIComponent(url.password),
      DATABASE_NAME: name,
    },
    drop: () => admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`),
  };
}
