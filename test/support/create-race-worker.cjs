// One OS process of the createCustomer + topUp race: for each shared id, create the customer, then top it up $1.
// argv: target idCount keyPrefix. Waits for "go" on stdin; prints one JSON line of counts.
const { openLedger } = require('../../dist/src/ledger/open.js');

const [target, idCount, prefix] = process.argv.slice(2);
const LANES = 8;

async function main() {
  const ledger = await openLedger(target);
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const counts = { topUps: 0, errors: [] };
  let next = 0;
  await Promise.all(
    Array.from({ length: LANES }, async () => {
      for (let i = next++; i < Number(idCount); i = next++) {
        const id = `race-${i}`;
        try {
          await ledger.createCustomer({ id });
          await ledger.topUp({ customerId: id, amount: 1_000_000_000n, idempotencyKey: `${prefix}:${id}` });
          counts.topUps++;
        } catch (e) {
          if (counts.errors.length < 5) counts.errors.push(`${e.code}: ${e.message}`);
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
