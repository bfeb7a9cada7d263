// The metering benches' unit: one fake chat model call on a fresh SQLite ledger (synchronous=NORMAL), bare
// or metered by a BillingCallbackHandler with the run fee and compute time off (a hold before the call, its
// settle after). bench/metering.mjs's first figure, and what metering-alloc.mjs and metering-tail.mjs measure.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Opens the ledger (customer 'bench', funded) and builds the model, its prompt and the step's handler, from the build in `dist`. */
export async function meteredStep({ dist = new URL('../dist', import.meta.url).pathname, tmpPrefix = 'fb-bench-metering-' } = {}) {
  const require = createRequire(path.join(path.resolve(dist), 'package.json'));
  const { openLedger } = require(path.join(path.resolve(dist), 'src/ledger/open.js'));
  const { BillingCallbackHandler } = require(path.join(path.resolve(dist), 'src/metering/handler.js'));
  const { FakeUsageChatModel } = require(path.join(path.resolve(dist), 'src/metering/fake-model.js'));
  const { HumanMessage } = require('@langchain/core/messages');

  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), tmpPrefix));
  const ledger = await openLedger(path.join(tmp, 'bench.sqlite'), { sqlite: { synchronous: 'NORMAL' } });
  await ledger.createCustomer({ id: 'bench' });
  await ledger.topUp({ customerId: 'bench', amount: 1_000_000n * 1_000_000_000n, idempotencyKey: 'bench-topup' });
  await ledger.activeRateCard();
  const model = new FakeUsageChatModel({ model: 'gpt-4o-mini', maxTokens: 256 });
  const msgs = [new HumanMessage('how much does one metered step cost on this machine')];
  const handler = new BillingCallbackHandler({ ledger, customerId: 'bench', conversationId: 'bench', runFee: false, computeTime: false });
  return {
    ledger,
    model,
    msgs,
    handler,
    BillingCallbackHandler,
    tmp,
    bare: () => model.invoke(msgs),
    metered: () => model.invoke(msgs, { callbacks: [handler] }),
    async close() {
      await ledger.close();
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}
