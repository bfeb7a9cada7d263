import { randomUUID } from 'node:crypto';
import { beforeAll } from 'vitest';
import { meterModel } from '../../nodes/shared/metered-model';
import { openFlowRun } from '../../src/plugin/flow-run';
import { sharedLedger } from '../../src/plugin/ledgers';
import { parseUsd } from '../../src/money';
import type { RateCard } from '../../src/pricing/ratecard';
import type { Charge } from '../../src/ledger/types';

/**
 * A metered chat-model variant (the Flowise nodes' wrapper) on a shared SQLite ledger at `db()` with `card`
 * imported before the describe's tests: funded customers, the wrapped model, and a customer's token charges.
 * Call inside a `describe`; `db` is read lazily because the test's directory is made in its own beforeAll.
 */
export function variantLedger(db: () => string, card: RateCard) {
  beforeAll(async () => {
    const { ledger } = await sharedLedger(db());
    await ledger.importRateCard(card);
  });
  return {
    /** A new customer with $10. */
    async customer(): Promise<string> {
      const id = `c-${randomUUID().slice(0, 8)}`;
      const { ledger } = await sharedLedger(db());
      await ledger.createCustomer({ id });
      await ledger.topUp({ customerId: id, amount: parseUsd('10'), idempotencyKey: `top-${id}` });
      return id;
    },
    /** `model` metered for `customerId`, each call in a FlowRun of its own (no fee, no sessions). */
    metered<T>(customerId: string, model: T): T {
      const run = () => openFlowRun({ ledgerDatabase: db(), customerId, conversationId: 'conv', runKey: randomUUID(), actor: 'test', runFee: null, checkSessions: false });
      return meterModel(model, { meter: run, nodeKey: 'llm_0', usesCustomerKey: false });
    },
    /** The customer's charges that settled a hold, in statement order. */
    async tokenCharges(customerId: string): Promise<Charge[]> {
      const { ledger } = await sharedLedger(db());
      const entries = (await ledger.statement(customerId)).filter((x) => x.type === 'settle' && x.chargeId);
      return Promise.all(entries.map((x) => ledger.getCharge(x.chargeId!)));
    },
  };
}
