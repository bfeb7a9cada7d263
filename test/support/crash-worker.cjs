// Streams holds and settles (16 concurrent loops) until killed. argv: target customerId [round]
// Each round uses its own keys: replaying an earlier round's keys would settle the holds it left open.
const { openLedger } = require('../../dist/src/ledger/open.js');

const [target, customerId, round = '0'] = process.argv.slice(2);
let settled = 0;

async function loop(ledger, lane) {
  for (let i = 0; ; i++) {
    const key = `crash:${round}:${lane}:${i}`;
    try {
      const h = await ledger.hold({ customerId, amount: 1_000_000n, idempotencyKey: key, ttlMs: 60_000 });
      // Some steps take a while (an LLM call), so holds are open whenever the kill lands.
      if (lane % 4 === 0) await new Promise((r) => setTimeout(r, 100));
      if (i % 4 === 3) await ledger.release({ holdId: h.id, idempotencyKey: `${key}:r` });
      else await ledger.settle({ holdId: h.id, amount: BigInt(1000 + i), idempotencyKey: `${key}:s` });
      // Tells the test that work is flowing, so its kill lands mid-stream however slow the machine is.
      if (++settled === 20) process.stdout.write('flowing\n');
    } catch (e) {
      if (e.code !== 'INSUFFICIENT_FUNDS') throw e;
    }
  }
}

openLedger(target).then((ledger) => {
  process.stdout.write('ready\n');
  for (let lane = 0; lane < 16; lane++) loop(ledger, lane).catch((e) => {
    process.stderr.write(String(e.stack || e));
    process.exit(1);
  });
});
