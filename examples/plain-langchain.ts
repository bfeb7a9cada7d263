/**
 * Metering a plain LangChain.js app with flowise-billing (no Flowise).
 *
 *   npx vite-node examples/plain-langchain.ts
 *
 * A deterministic fake chat model that reports token usage stands in for a
 * provider, so the example runs offline and prints the same numbers each time
 * (compute time aside). The ledger is an SQLite file in a temp directory.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ChatPromptTemplate } from '@langchain/core/prompts';
import { StringOutputParser } from '@langchain/core/output_parsers';
import { BillingError, formatUsd, openLedger, parseUsd } from '../src/index';
import { BillingCallbackHandler, billingRunConfig } from '../src/langchain';
import { FakeUsageChatModel } from '../src/metering/fake-model';

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowise-billing-example-'));
  const ledger = await openLedger(path.join(dir, 'billing.sqlite'));
  try {
    await ledger.createCustomer({ id: 'acme', name: 'Acme Corp' });
    await ledger.topUp({ customerId: 'acme', amount: parseUsd('0.05'), idempotencyKey: 'example-topup-1' });

    // An LCEL chain: prompt → chat model → string.
    const chain = ChatPromptTemplate.fromMessages([
      ['system', 'You answer in one sentence.'],
      ['human', '{question}'],
    ])
      .pipe(new FakeUsageChatModel({ model: 'gpt-4o', maxTokens: 500 }))
      .pipe(new StringOutputParser());

    for (let i = 1; ; i++) {
      // One handler per conversation turn; it meters every run it is attached to.
      const handler = new BillingCallbackHandler({ ledger, customerId: 'acme', conversationId: 'example-chat', messageId: `msg-${i}` });
      try {
        const answer = await chain.invoke({ question: `What is metering, take ${i}?` }, billingRunConfig(handler));
        console.log(`run ${i}: ${answer}`);
        for (const c of handler.charges) console.log(`  ${c.charge.chargeType?.padEnd(20)} qty ${c.charge.quantity?.padStart(6)}  $${formatUsd(c.charge.amount)}`);
        console.log(`  run total $${formatUsd(handler.runs[0]!.cost)}, balance $${formatUsd((await ledger.balance('acme')).balance)}`);
      } catch (e) {
        if (!(e instanceof BillingError)) throw e;
        console.log(`run ${i}: refused — ${e.code}: ${e.message}`);
        break;
      }
    }
    const b = await ledger.balance('acme');
    console.log(`final balance $${formatUsd(b.balance)}, held $${formatUsd(b.held)}; invariants ${(await ledger.checkInvariants()).ok ? 'ok' : 'BROKEN'}`);
  } finally {
    await ledger.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
