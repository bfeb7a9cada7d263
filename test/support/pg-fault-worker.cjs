// Hold+settle load from one OS process while the test drops connections and restarts PostgreSQL.
// argv: target customerId prefix secret. Prints "ready", starts on a stdin line, prints "tick <pairs> <errors>"
// lines while working, stops after the current pairs on a second stdin line, and prints one JSON line.
// No 'uncaughtException' handler on purpose: an unhandled pg 'error' event must not be able to end the process.
const { openLedger } = require('../../dist/src/ledger/open.js');

const [target, customerId, prefix, secret] = process.argv.slice(2);
const LANES = 4;
const counts = { pairs: 0, errors: 0, codes: {}, samples: [], leaked: [], gaveUp: 0 };
let stopping = false;

function note(e) {
  counts.errors++;
  const code = e && e.code ? String(e.code) : `uncoded ${e && e.name}`;
  counts.codes[code] = (counts.codes[code] || 0) + 1;
  const text = `${e && e.message} ${JSON.stringify(e && e.details)} ${e && e.stack}`;
  if (text.includes(secret) || /postgres(ql)?:\/\//i.test(text)) counts.leaked.push(text.slice(0, 300));
  if (counts.samples.length < 5) counts.samples.push(`${code}: ${e && e.message}`);
  return code;
}

/** Retries the same idempotency key through an outage: a commit whose answer was lost replays as its first result. */
async function retrying(fn) {
  for (let attempt = 0; attempt < 1200; attempt++) {
    try {
      return await fn();
    } catch (e) {
      if (note(e) !== 'DATABASE_ERROR') throw e;
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  counts.gaveUp++;
  throw new Error('gave up after 30 s of DATABASE_ERROR');
}

async function lane(ledger, n) {
  for (let i = 0; !stopping; i++) {
    const key = `${prefix}:${n}:${i}`;
    const h = await retrying(() => ledger.hold({ customerId, amount: 1_000_000n, idempotencyKey: key, ttlMs: 600_000 }));
    await retrying(() => ledger.settle({ holdId: h.id, amount: 25_000n, idempotencyKey: `${key}:s` }));
    counts.pairs++;
  }
}

async function main() {
  const ledger = await openLedger(target, { poolSize: 4 });
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  const tick = setInterval(() => process.stdout.write(`tick ${counts.pairs} ${counts.errors}\n`), 100);
  process.stdin.once('data', () => (stopping = true));
  const lanes = Array.from({ length: LANES }, (_, n) => lane(ledger, n));
  const results = await Promise.allSettled(lanes);
  clearInterval(tick);
  counts.laneFailures = results.filter((r) => r.status === 'rejected').map((r) => String(r.reason && r.reason.message));
  await ledger.close();
  process.stdin.destroy();
  process.stdout.write(JSON.stringify(counts) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
