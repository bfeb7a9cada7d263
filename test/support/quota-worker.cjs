// Admits runs for many conversations at once from its own OS process. argv: target customerId prefix count
const { openLedger } = require('../../dist/src/ledger/open.js');
const { QuotaService } = require('../../dist/src/quota/service.js');

const [target, customerId, prefix, count] = process.argv.slice(2);

async function main() {
  const ledger = await openLedger(target);
  const quota = new QuotaService(ledger);
  process.stdout.write('ready\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  process.stdin.destroy();
  const out = { admitted: [], refused: 0, errors: [] };
  await Promise.all(
    Array.from({ length: Number(count) }, async (_, i) => {
      const conversationId = prefix === 'same' ? 'same' : `${prefix}-${i}`;
      try {
        const a = await quota.admitRun({ customerId, conversationId });
        out.admitted.push({ session: a.session, sessionId: a.sessionId });
      } catch (e) {
        if (e.code === 'QUOTA_EXCEEDED') out.refused++;
        else out.errors.push(`${e.code}: ${e.message}`);
      }
    }),
  );
  await ledger.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
