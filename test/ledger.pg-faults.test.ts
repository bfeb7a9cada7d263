import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLedger } from '../src/ledger/open';
import type { SqlLedger } from '../src/ledger/sql-ledger';
import { parseUsd } from '../src/money';
import { type PgCluster, pgClusterUnavailable, startPgCluster } from './support/pg-cluster';
import { spawnWorker, type Worker } from './support/processes';

const unavailable = pgClusterUnavailable();
if (unavailable) console.warn(`\n*** SKIPPING PostgreSQL fault tests: ${unavailable} ***\n`);

const PROCS = 4;

function lastTick(w: Worker): { pairs: number; errors: number } {
  const m = [...w.output().matchAll(/^tick (\d+) (\d+)$/gm)].at(-1);
  return m ? { pairs: Number(m[1]), errors: Number(m[2]) } : { pairs: 0, errors: 0 };
}

/** Waits until every worker has completed `more` pairs beyond `from` (work is flowing, or flowing again). */
async function progressed(workers: Worker[], from: number[], more: number, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (workers.some((w, i) => lastTick(w).pairs < from[i]! + more)) {
    for (const w of workers) if (w.child.exitCode !== null || w.child.signalCode !== null) throw new Error(`a worker exited ${what}: ${w.output().slice(-500)}`);
    if (Date.now() > deadline) throw new Error(`no progress ${what}: ${workers.map((w) => lastTick(w).pairs).join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(unavailable !== null)('PostgreSQL faults: a private cluster restarted and its connections killed under load', () => {
  let cluster: PgCluster;
  let ledger: SqlLedger;

  beforeAll(async () => {
    cluster = await startPgCluster();
    ledger = await openLedger(cluster.url);
  });
  afterAll(async () => {
    await ledger?.close().catch(() => undefined);
    await cluster?.destroy();
  });

  it(`${PROCS} processes keep running through pg_terminate_backend and pg_ctl restart; outage errors are typed and secret-free; nothing is lost or doubled`, async () => {
    for (let p = 0; p < PROCS; p++) {
      await ledger.createCustomer({ id: `load-${p}` });
      await ledger.topUp({ customerId: `load-${p}`, amount: parseUsd('100000'), idempotencyKey: `seed-${p}` });
    }
    const workers = Array.from({ length: PROCS }, (_, p) => spawnWorker('pg-fault-worker.cjs', [cluster.url, `load-${p}`, `w${p}`, cluster.password]));
    await Promise.all(workers.map((w) => w.ready));
    for (const w of workers) w.child.stdin!.write('go\n');
    await progressed(workers, workers.map(() => 0), 20, 'before the faults');

    // 1. Connections in use are killed from the server side, several times.
    let terminated = 0;
    for (let i = 0; i < 5; i++) {
      terminated += await cluster.terminateBackends();
      await new Promise((r) => setTimeout(r, 150));
    }
    expect(terminated).toBeGreaterThan(0);
    await progressed(workers, workers.map((w) => lastTick(w).pairs), 20, 'after pg_terminate_backend');

    // 2. A real server restart mid-load.
    const beforeRestart = workers.map((w) => lastTick(w).pairs);
    await cluster.restart();
    await progressed(workers, beforeRestart, 20, 'after pg_ctl restart');

    // 3. A longer outage: the server is down for a second, so operations fail while it is.
    await cluster.stop();
    await new Promise((r) => setTimeout(r, 1000));
    const duringOutage = workers.map((w) => lastTick(w).errors);
    await cluster.start();
    await progressed(workers, workers.map((w) => lastTick(w).pairs), 20, 'after the server came back');

    for (const w of workers) w.child.stdin!.end('stop\n');
    const results = (await Promise.all(workers.map((w) => w.result))).map((line) => JSON.parse(line));
    // Nobody died: every worker exited 0 after finishing its pairs.
    expect(workers.map((w) => w.child.exitCode)).toEqual(workers.map(() => 0));
    expect(results.flatMap((r) => r.laneFailures)).toEqual([]);
    // Outage errors were seen, every one a DATABASE_ERROR, none carrying the URL or password.
    expect(duringOutage.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    for (const r of results) expect(Object.keys(r.codes).filter((c) => c !== 'DATABASE_ERROR')).toEqual([]);
    expect(results.flatMap((r) => r.leaked)).toEqual([]);

    // Exactly once: retried keys whose commit answer was lost replayed their first result.
    for (let p = 0; p < PROCS; p++) {
      const entries = await ledger.statement(`load-${p}`);
      expect(entries.filter((e) => e.type === 'hold')).toHaveLength(results[p].pairs);
      expect(entries.filter((e) => e.type === 'settle')).toHaveLength(results[p].pairs);
      expect((await ledger.balance(`load-${p}`)).balance).toBe(parseUsd('100000') - 25_000n * BigInt(results[p].pairs));
    }
    expect(await ledger.checkInvariants()).toEqual({ ok: true, violations: [] });
  }, 180_000);

  it('an operation during an outage fails with DATABASE_ERROR free of the URL and password, and the next one after the restart works', async () => {
    await ledger.createCustomer({ id: 'outage' });
    await ledger.topUp({ customerId: 'outage', amount: parseUsd('10'), idempotencyKey: 'outage-seed' });
    await cluster.stop();
    try {
      const errors: unknown[] = [];
      for (const op of [
        () => ledger.topUp({ customerId: 'outage', amount: parseUsd('1'), idempotencyKey: 'outage-1' }),
        () => ledger.balance('outage'),
        () => ledger.checkInvariants(),
      ]) {
        errors.push(await op().then(() => null, (e: unknown) => e));
      }
      for (const e of errors) {
        expect(e).toMatchObject({ code: 'DATABASE_ERROR' });
        const text = `${(e as Error).message} ${JSON.stringify((e as { details: unknown }).details)} ${(e as Error).stack}`;
        expect(text).not.toContain(cluster.password);
        expect(text).not.toMatch(/postgres(ql)?:\/\//);
      }
    } finally {
      await cluster.start();
    }
    await ledger.topUp({ customerId: 'outage', amount: parseUsd('1'), idempotencyKey: 'outage-1' });
    expect((await ledger.balance('outage')).balance).toBe(parseUsd('11'));
  });

  it('a wrong password is a DATABASE_ERROR that names neither the URL nor the password tried', async () => {
    const wrong = 'not-the-pw-' + Math.random().toString(36).slice(2);
    const url = cluster.url.replace(encodeURIComponent(cluster.password), wrong);
    const e = await openLedger(url).then(() => null, (err: unknown) => err);
    expect(e).toMatchObject({ code: 'DATABASE_ERROR' });
    const text = `${(e as Error).message} ${JSON.stringify((e as { details: unknown }).details)} ${(e as Error).stack}`;
    expect(text).not.toContain(wrong);
    expect(text).not.toContain(cluster.password);
    expect(text).not.toMatch(/postgres(ql)?:\/\//);
  });
});
