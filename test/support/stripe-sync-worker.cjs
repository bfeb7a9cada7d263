// Delivers the Stripe meter-event outbox until nothing is pending, then prints a JSON status line.
// argv: target apiBase secretKey [ratePerSecond]. Tests SIGKILL it mid-batch and start it again.
const { openLedger } = require('../../dist/src/ledger/open.js');
const { createStripeClient } = require('../../dist/src/stripe/client.js');
const { stripeSync } = require('../../dist/src/stripe/cli.js');

const [target, apiBase, secretKey, rate] = process.argv.slice(2);

openLedger(target)
  .then(async (ledger) => {
    const stripe = createStripeClient({ secretKey, apiBase, timeoutMs: 2000 });
    process.stdout.write('ready\n');
    const status = await stripeSync(ledger, {
      stripe,
      ratePerSecond: Number(rate || 400),
      batchSize: 40,
      concurrency: 4,
      leaseMs: 1000,
      backoff: { baseMs: 10, capMs: 100 },
      timeoutMs: 60_000,
    });
    await ledger.close();
    process.stdout.write(`${JSON.stringify(status)}\n`);
    process.exit(0);
  })
  .catch((e) => {
    process.stderr.write(String(e && e.stack ? e.stack : e));
    process.exit(1);
  });
