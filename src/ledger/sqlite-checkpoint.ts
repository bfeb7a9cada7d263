import { Worker } from 'node:worker_threads';

/**
 * WAL checkpoints off the commit path. SQLite's automatic checkpoint runs
 * inside whichever COMMIT crosses the WAL threshold and fsyncs the database
 * there, which is where a busy writer's p99 goes. Once a ledger has written
 * enough to matter, a worker thread with its own connection runs PASSIVE
 * checkpoints (they never block writers) every 200 ms, and the writer's own
 * automatic checkpoint is raised: when it runs, little is left to copy.
 */
export interface Checkpointer {
  close(): Promise<void>;
}

/** How often the thread checkpoints; a no-op when nothing was written. */
const INTERVAL_MS = 200;

// Plain CommonJS in a string: runs the same from src (tests), dist and a copy installed into Flowise.
const SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { driver, modulePath, file, synchronous } = workerData;
let db;
if (driver === 'better-sqlite3') {
  const Database = require(modulePath);
  db = new Database(file, { fileMustExist: true });
} else {
  const { DatabaseSync } = require('node:sqlite');
  db = new DatabaseSync(file);
}
db.exec('PRAGMA busy_timeout = 50');
db.exec('PRAGMA synchronous = ' + synchronous);
const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
const timer = setInterval(() => {
  try { checkpoint.all(); } catch { /* busy: the next tick retries */ }
}, ${INTERVAL_MS});
parentPort.on('message', () => {
  clearInterval(timer);
  try { db.close(); } catch {}
  parentPort.close();
});
`;

export function startCheckpointer(opts: { driver: 'better-sqlite3' | 'node:sqlite'; file: string; synchronous: string }): Checkpointer | null {
  let worker: Worker;
  try {
    const modulePath = opts.driver === 'better-sqlite3' ? require.resolve('better-sqlite3') : '';
    worker = new Worker(SOURCE, { eval: true, workerData: { ...opts, modulePath } });
  } catch {
    return null;
  }
  // A failed thread only means checkpoints fall back to the writer's automatic ones.
  worker.on('error', () => undefined);
  worker.unref();
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    async close() {
      worker.postMessage('close');
      const timeout = setTimeout(() => void worker.terminate(), 2_000);
      await exited;
      clearTimeout(timeout);
    },
  };
}
