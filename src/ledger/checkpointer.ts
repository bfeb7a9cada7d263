import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { SqliteDriverName } from './sqlite';

/**
 * The WAL checkpoint, off the event loop (opt-in: SqliteOptions.checkpoint).
 * SQLite's automatic checkpoint runs inside the COMMIT that crosses its
 * threshold: the whole copy and its fsync, 20–35 ms here once every ~2,000
 * lone operations, a stall of every caller on the event loop. A worker thread
 * with its own connection watches how far the WAL is ahead of the database
 * file and runs PASSIVE checkpoints (they never block the writer) once it is
 * BACKGROUND_PAGES ahead. The writer's own automatic checkpoint stays as the
 * backstop, raised while the thread runs: it then finds almost everything
 * copied and only resets the WAL.
 *
 * Why not the default: the thread's fsync of the database file slows the
 * writer's commits that land during it (measured: with the thread's fsync
 * turned off, the writer's hold p99 went back to that of inline checkpoints).
 * The stalls go and throughput rises, but the p99 of a lone caller's
 * operations rises by about 0.1 ms (README, Speed).
 *
 * The thread starts after a process's first START_AFTER_COMMITS write
 * transactions, so a CLI command that writes a few rows never pays for it.
 */
export const BACKGROUND_PAGES = 8_000;
export const START_AFTER_COMMITS = 256;
const POLL_MS = 20;

export interface CheckpointerOptions {
  readonly file: string;
  readonly driver: SqliteDriverName;
  /** better-sqlite3's resolved module path (the thread loads the same build). */
  readonly driverPath?: string;
  /** Sets the writer connection's automatic checkpoint (pages). */
  readonly setWriterAutocheckpoint: (pages: number) => void;
  readonly writerPages: number;
  readonly backstopPages: number;
}

export interface Checkpointer {
  /** Called after each committed write transaction. */
  committed(): void;
  /** Checkpoints the thread has run that copied pages. */
  readonly runs: number;
  close(): Promise<void>;
}

/**
 * The thread's code. It reads the wal-index header from the -shm file without
 * a lock (mxFrame at byte 16, the checkpoint's nBackfill at byte 96, native
 * byte order: SQLite's documented WAL-index format): a torn read only moves
 * one checkpoint a poll earlier or later.
 */
const THREAD = `
const { parentPort, workerData: w } = require('node:worker_threads');
const fs = require('node:fs');
let db, ckpt;
if (w.driver === 'better-sqlite3') { const D = require(w.driverPath); db = new D(w.file, { fileMustExist: true }); db.pragma('busy_timeout = 0'); ckpt = db.prepare('PRAGMA wal_checkpoint(PASSIVE)'); }
else { const { DatabaseSync } = require('node:sqlite'); db = new DatabaseSync(w.file); db.exec('PRAGMA busy_timeout = 0'); ckpt = db.prepare('PRAGMA wal_checkpoint(PASSIVE)'); }
const buf = Buffer.alloc(100);
const u32 = (o) => (w.le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
let fd = -1;
function ahead() {
  if (fd < 0) fd = fs.openSync(w.file + '-shm', 'r');
  if (fs.readSync(fd, buf, 0, 100, 0) < 100) return 0;
  const mx = u32(16), done = u32(96);
  return done <= mx ? mx - done : mx;
}
const timer = setInterval(() => {
  let n;
  try {
    n = ahead();
  } catch {
    // No wal-index to read: the thread cannot tell when to run, so it ends and the writer checkpoints as before.
    process.exit(0);
  }
  if (n < w.pages) return;
  try {
    const r = ckpt.get();
    if (r && Number(r.checkpointed) > 0) parentPort.postMessage('ran');
  } catch {
    // The backstop covers a failed checkpoint; try again at the next poll.
  }
}, w.pollMs);
parentPort.on('message', () => { clearInterval(timer); try { if (fd >= 0) fs.closeSync(fd); db.close(); } finally { parentPort.close(); } });
parentPort.postMessage('ready');
`;

export function sqliteCheckpointer(o: CheckpointerOptions): Checkpointer {
  let commits = 0;
  let worker: Worker | undefined;
  let runs = 0;
  let closed = false;
  const start = () => {
    const w = new Worker(THREAD, {
      eval: true,
      workerData: { file: o.file, driver: o.driver, driverPath: o.driverPath, pages: BACKGROUND_PAGES, pollMs: POLL_MS, le: os.endianness() === 'LE' },
    });
    w.on('message', (m) => {
      if (m === 'ready' && !closed) o.setWriterAutocheckpoint(o.backstopPages);
      else if (m === 'ran') runs++;
    });
    const lost = () => {
      // A thread that failed to start or died: the writer checkpoints by itself again.
      if (worker === w) worker = undefined;
      if (!closed) o.setWriterAutocheckpoint(o.writerPages);
    };
    w.on('error', lost);
    w.on('exit', lost);
    // Never what keeps a process alive (a ledger left open must not hang its exit); after the listeners,
    // which would take the reference again.
    w.unref();
    worker = w;
  };
  return {
    committed() {
      if (++commits === START_AFTER_COMMITS && !closed) start();
    },
    get runs() {
      return runs;
    },
    async close() {
      closed = true;
      const w = worker;
      worker = undefined;
      if (!w) return;
      const exited = new Promise<void>((r) => w.once('exit', () => r()));
      w.postMessage('stop');
      // A thread stuck in a checkpoint (a slow disk) is stopped rather than waited for.
      const timer = setTimeout(() => void w.terminate(), 2_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
