import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { meterModel } from '../../nodes/shared/metered-model';
import { openFlowRun } from '../../src/plugin/flow-run';
import { sharedLedger } from '../../src/plugin/ledgers';
import { parseUsd } from '../../src/money';
import type { RateCard } from '../../src/pricing/ratecard';
import type { Charge } from '../../src/ledger/types';
import type { SqlLedger } from '../../src/ledger/sql-ledger';
import { BillingCallbackHandler } from '../../src/metering/handler';
import { BACKENDS } from './backends';

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

/**
 * The LangChain handler on a fresh SQLite ledger with `card` imported, and a new customer with $10 before
 * each test (fee and compute off, failures kept in `handler.failures`). Call inside a `describe`.
 */
export function handlerLedger(card: RateCard, conversationId: string) {
  const backend = BACKENDS.find((b) => b.name === 'sqlite')!;
  const ctx = { ledger: undefined as unknown as SqlLedger, customerId: '' };
  beforeAll(async () => {
    ctx.ledger = await backend.open(await backend.freshTarget());
    await ctx.ledger.importRateCard(card);
  });
  afterAll(() => ctx.ledger?.close());
  beforeEach(async () => {
    ctx.customerId = `c-${randomUUID().slice(0, 8)}`;
    await ctx.ledger.createCustomer({ id: ctx.customerId });
    await ctx.ledger.topUp({ customerId: ctx.customerId, amount: parseUsd('10'), idempotencyKey: `top-${ctx.customerId}` });
  });
  return {
    get ledger(): SqlLedger {
      return ctx.ledger;
    },
    get customerId(): string {
      return ctx.customerId;
    },
    handler: () => new BillingCallbackHandler({ ledger: ctx.ledger, customerId: ctx.customerId, conversationId, runFee: false, computeTime: false, onError: () => undefined }),
  };
}
