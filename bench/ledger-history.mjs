// A PostgreSQL ledger with a past, for benchmarks that measure it in use. A fresh ledger's prepared
// statements are planned while its tables are empty, and PostgreSQL keeps those generic plans until
// autovacuum first analyzes the tables (its 60 s naptime, then 50 changed rows): until then the
// idempotency look-up scans billing_entries sequentially, one growing scan per operation. Measured with
// `BENCH_CLIENTS=1 node bench/plugin-prediction.mjs`: about 10 % of the server's CPU per prediction.
// A ledger that has served for a while has statistics; seeding a history and analyzing, as autovacuum
// would have, measures that ledger.
import pg from 'pg';

/**
 * `n` customers with a past in every table a prediction reads: created, topped up, one hold settled
 * (holds, charges, entries), and with `quota` and `planId`, subscribed with one conversation admitted
 * (subscriptions, conversations, sessions). Analyzing a table the history left nearly empty would plan
 * its lookups as sequential scans, which PostgreSQL then keeps for the whole run (seen: every
 * billing_holds and billing_conversations lookup of plugin-prediction scanning the table after a
 * history of top-ups alone). Batched as the ledger groups concurrent calls.
 */
export async function seedHistory(ledger, n, { prefix = 'past', quota, planId } = {}) {
  for (let i = 0; i < n; i += 500) {
    await Promise.all(
      Array.from({ length: Math.min(500, n - i) }, async (_, j) => {
        const id = `${prefix}${i + j}`;
        await ledger.createCustomer({ id });
        await ledger.topUp({ customerId: id, amount: 1_000_000_000n, idempotencyKey: `${id}-topup` });
        const h = await ledger.hold({ customerId: id, amount: 1_000_000n, idempotencyKey: `${id}-hold` });
        await ledger.settle({ holdId: h.id, amount: 250_000n, idempotencyKey: `${id}-settle` });
        if (quota && planId) {
          await quota.subscribe({ customerId: id, planId });
          await quota.admitRun({ customerId: id, conversationId: `${id}-chat` });
        }
      }),
    );
  }
}

/** ANALYZE every table of the database at `url` (a `?schema=` is ignored: all schemas, the flow host's too). */
export async function analyzeDatabase(url) {
  const u = new URL(url);
  u.search = '';
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    await c.query('ANALYZE');
  } finally {
    await c.end();
  }
}
