// A separate OS process racing the others on one ledger. Built code only (npm test builds first).
// argv: target customerId count amountNanos keyPrefix [settle]
// Waits for "go" on stdin so every process starts together; prints one JSON line of counts.
const { openLedger } = require('../../dist/src/ledger/open.js');

const [target, customerId, count, amount, prefix, mode] = process.argv.slice(2);

async function main() {
  const ledger = await openLedger(target);
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const counts = { ok: 0, insufficient: 0, other: 0, errors: [] };
  await Promise.all(
    Array.from({ length: Number(count) }, async (_, i) => {
      try {
        const h = await ledger.hold({ customerId, amount: BigInt(amount), idempotencyKey: `${prefix}:${i}`, actor: 'worker' });
        if (mode === 'settle') {
          // Settle for a part of the hold so the journal has real movement to sum.
          await ledger.settle({ holdId: h.id, amount: BigInt(amount) / BigInt(1 + (i % 3)), idempotencyKey: `${prefix}:${i}:settle`, actor: 'worker' });
        }
        counts.ok++;
      } catch (e) {
        if (e.code === 'INSUFFICIENT_FUNDS') counts.insufficient++;
        else {
          counts.other++;
          if (counts.errors.length < 3) counts.errors.push(`${e.code}: ${e.message}`);
        }
      }
    }),
  );
  await ledger.close();
  process.stdout.write(JSON.stringify(counts) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
