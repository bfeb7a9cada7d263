import Stripe from 'stripe';
import { parseUsd } from '../../src/money';
import { configureOutbox, ensureMeter, ensureStripeCustomer } from '../../src/stripe/customers';
import { postgresDialect } from '../../src/ledger/postgres';
import { type LedgerOptions, SqlLedger } from '../../src/ledger/sql-ledger';
import { sqliteDialect } from '../../src/ledger/sqlite';
import type { Backend } from './backends';

/** Opens a ledger on a backend's target through the dialects directly (independent of openLedger's driver loading). */
export function openFor(backend: Backend, target: string, opts: LedgerOptions = {}): Promise<SqlLedger> {
  return SqlLedger.open(backend.name === 'postgres' ? postgresDialect({ url: target }) : sqliteDialect({ path: target }), opts);
}
import type { StripeTestServer } from './stripe-server';

/** A real SDK client on the loopback double; SDK retries off (our code retries), short timeout for hang faults. */
export function sdk(server: StripeTestServer, config: Stripe.StripeConfig = {}): Stripe {
  return new Stripe(server.secretKey, { ...server.sdkConfig, maxNetworkRetries: 0, timeout: 2_000, ...config });
}

/** A fresh ledger with the outbox on, a meter in Stripe, and funded customers mapped to Stripe customers. */
export async function stripeLedger(
  backend: Backend,
  server: StripeTestServer,
  opts: { customers?: string[]; fund?: string; clock?: () => number; perChargeType?: boolean } = {},
): Promise<{ ledger: SqlLedger; target: string; stripe: Stripe; meterId: string }> {
  const target = await backend.freshTarget();
  const ledger = await openFor(backend, target, opts.clock ? { clock: opts.clock } : {});
  const stripe = sdk(server);
  await configureOutbox(ledger, { perChargeType: opts.perChargeType ?? false });
  const meterId = await ensureMeter(stripe, 'flowise_billing_usage');
  for (const id of opts.customers ?? ['acme']) {
    await ledger.createCustomer({ id });
    await ledger.topUp({ customerId: id, amount: parseUsd(opts.fund ?? '1000'), idempotencyKey: `seed:${id}` });
    await ensureStripeCustomer(ledger, stripe, id);
  }
  return { ledger, target, stripe, meterId };
}

export async function outboxRows(ledger: SqlLedger): Promise<Array<{ id: string; entryId: string; customerId: string; value: bigint; amountNanos: bigint; status: string; kind: string }>> {
  const rows = await ledger.dialect.read((c) => c.query('SELECT * FROM billing_stripe_outbox ORDER BY created_at, id'));
  return rows.map((r) => ({
    id: String(r.id),
    entryId: String(r.entry_id),
    customerId: String(r.customer_id),
    value: BigInt(String(r.value)),
    amountNanos: BigInt(String(r.amount_nanos)),
    status: String(r.status),
    kind: String(r.kind),
  }));
}

/** Meter events Stripe holds for our rows: identifiers must be unique and match the outbox one-to-one. */
export function eventsByIdentifier(server: StripeTestServer): Map<string, bigint> {
  const out = new Map<string, bigint>();
  for (const e of server.meterEvents()) {
    if (out.has(e.identifier)) throw new Error(`duplicate identifier at Stripe: ${e.identifier}`);
    out.set(e.identifier, BigInt(e.value));
  }
  return out;
}
