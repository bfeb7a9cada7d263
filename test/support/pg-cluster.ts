import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/**
 * A private, throw-away PostgreSQL cluster for tests that restart or kill the
 * database (never the shared server on 5432): initdb into a temp dir, pg_ctl on
 * a free loopback port, password authentication over TCP so a test can check
 * that the password never reaches an error. Runs the server as the `postgres`
 * user when the tests run as root.
 */
export interface PgCluster {
  /** postgres://postgres:<password>@127.0.0.1:<port>/postgres */
  readonly url: string;
  readonly password: string;
  readonly port: number;
  readonly dir: string;
  /** Runs SQL as the superuser over the cluster's Unix socket; returns psql's unaligned output. */
  sql(query: string): Promise<string>;
  /** Terminates every client backend of `database` (default: all); returns how many. */
  terminateBackends(database?: string): Promise<number>;
  /** `pg_ctl restart -m fast`: drops every connection, then accepts new ones again. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and removes its directory. */
  destroy(): Promise<void>;
}

const run = promisify(execFile);

/** The directory holding initdb/pg_ctl/psql, or null when the PostgreSQL server binaries are not installed. */
export function pgBinDir(): string | null {
  const fromEnv = process.env.FB_PG_BIN;
  if (fromEnv && fs.existsSync(path.join(fromEnv, 'initdb'))) return fromEnv;
  const root = '/usr/lib/postgresql';
  if (!fs.existsSync(root)) return null;
  const versions = fs
    .readdirSync(root)
    .filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : null;
}

/** Why a private cluster cannot run here, or null when it can. Tests skip with this reason, loudly. */
export function pgClusterUnavailable(): string | null {
  if (!pgBinDir()) return 'PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or $FB_PG_BIN';
  if (process.getuid?.() === 0) {
    try {
      execFileSync('id', ['-u', 'postgres'], { stdio: 'ignore' });
    } catch {
      return 'running as root but there is no "postgres" user to run the server as';
    }
  }
  return null;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

export async function startPgCluster(opts: { password?: string } = {}): Promise<PgCluster> {
  const reason = pgClusterUnavailable();
  if (reason) throw new Error(`cannot start a private PostgreSQL cluster: ${reason}`);
  const bin = pgBinDir()!;
  const asRoot = process.getuid?.() === 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-pg-'));
  const data = path.join(dir, 'data');
  const password = opts.password ?? `pw-${Math.random().toString(36).slice(2, 12)}`;
  const pwfile = path.join(dir, 'pw');
  fs.writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (asRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
    fs.chownSync(dir, uid, gid);
    fs.chownSync(pwfile, uid, gid);
  }
  const tool = (name: string, args: string[]) =>
    asRoot ? run('runuser', ['-u', 'postgres', '--', path.join(bin, name), ...args]) : run(path.join(bin, name), args);

  await tool('initdb', ['-D', data, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--no-sync']);
  let port = 0;
  const logFile = path.join(dir, 'server.log');
  const ctl = async (action: 'start' | 'stop' | 'restart') => {
    const args = [action, '-D', data, '-w', '-t', '60', '-l', logFile];
    if (action !== 'stop') {
      args.push('-o', `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${dir} -c fsync=off -c shared_buffers=16MB -c max_connections=100`);
    }
    if (action !== 'start') args.push('-m', 'fast');
    await tool('pg_ctl', args);
  };
  // Another process may take the port between choosing and binding it: try a few.
  for (let attempt = 0; ; attempt++) {
    port = await freePort();
    try {
      await ctl('start');
      break;
    } catch (e) {
      if (attempt >= 4) throw new Error(`private PostgreSQL did not start: ${(e as Error).message}\n${fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8').slice(-2000) : ''}`);
    }
  }

  const sql = async (query: string) =>
    (await run(path.join(bin, 'psql'), ['-h', dir, '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-tAX', '-v', 'ON_ERROR_STOP=1', '-c', query])).stdout.trim();
  let destroyed = false;
  return {
    url: `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    password,
    port,
    dir,
    sql,
    async terminateBackends(database?: string) {
      const where = database ? `AND datname = '${database.replace(/'/g, "''")}'` : '';
      const out = await sql(
        `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() ${where}`,
      );
      return Number(out);
    },
    restart: () => ctl('restart'),
    stop: () => ctl('stop'),
    start: () => ctl('start'),
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      await ctl('stop').catch(() => undefined);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
