// A private PostgreSQL cluster for tests that must restart their database: initdb + pg_ctl on a free
// port in a temp dir, run as the `postgres` user when we are root (initdb refuses root). Never touches
// the machine's own server. Plain ESM so the queue topology script can use it from a shell too.

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './flowise-env.mjs';

/** The newest PostgreSQL server binaries on this machine (Debian layout), or PG_BIN. */
export function pgBinDir() {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = fs.existsSync(root) ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'initdb'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (!versions.length) throw new Error('no PostgreSQL server binaries (initdb) found: install the server package (Debian: apt-get install postgresql) or set PG_BIN');
  return path.join(root, versions[0], 'bin');
}

/**
 * Starts a throw-away cluster (trust auth, user `postgres`) on 127.0.0.1:<free port>.
 * Returns { port, host, user, url(db), stop(), restart({ downMs }), kill(), start() }.
 */
export async function startPgCluster({ log = () => undefined, settings = {} } = {}) {
  const bin = pgBinDir();
  const asRoot = process.getuid?.() === 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-pgcluster-'));
  const data = path.join(dir, 'data');
  const logFile = path.join(dir, 'postgres.log');
  if (asRoot) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const as = (cmd, args) => (asRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]);
  const run = (cmd, args) => {
    const [c, a] = as(path.join(bin, cmd), args);
    const r = spawnSync(c, a, { encoding: 'utf8', cwd: dir });
    if (r.status !== 0) throw new Error(`${cmd} failed (${r.status}): ${(r.stderr || r.stdout).trim().slice(0, 800)}`);
    return r.stdout;
  };
  const port = await freePort();
  run('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '--no-sync', '-E', 'UTF8']);
  const conf = { listen_addresses: "'127.0.0.1'", port, unix_socket_directories: `'${dir}'`, fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: 200, shared_buffers: "'64MB'", ...settings };
  fs.appendFileSync(path.join(data, 'postgresql.conf'), Object.entries(conf).map(([k, v]) => `${k} = ${v}\n`).join(''));
  const start = () => run('pg_ctl', ['-D', data, '-l', logFile, '-w', '-t', '60', 'start']);
  // 'fast' ends every connection at once, as an operator's restart does.
  const stopServer = (mode = 'fast') => run('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']);
  start();
  log(`private PostgreSQL on 127.0.0.1:${port} (${dir})`);
  let stopped = false;
  const cleanup = () => {
    if (stopped) return;
    stopped = true;
    try {
      stopServer('immediate');
    } catch {
      // already down
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', cleanup);
  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    dir,
    logFile,
    url: (db = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${db}`,
    start,
    stopServer,
    /** Stops the server (fast: connections are cut), waits `downMs`, starts it again. */
    async restart({ downMs = 3000 } = {}) {
      stopServer('fast');
      await new Promise((r) => setTimeout(r, downMs));
      start();
    },
    async stop() {
      cleanup();
    },
  };
}
