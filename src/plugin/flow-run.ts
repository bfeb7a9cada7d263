import { inspect } from 'node:util';
import { BillingError, ByokRequiredError, ValidationError } from '../errors';
import { billingMetadata } from '../langfuse/metadata';
import type { Charge } from '../ledger/types';
import { type Nanos, parseUsd } from '../money';
import { cacheParts, estimatePromptTokens, estimateTextTokens, type TokenCounts } from '../metering/estimate';
import { RunFinishError, RunLedger, type StepHold } from '../metering/run-ledger';
import { cacheMetadata, priceTokens } from '../pricing/price';
import type { RateCard } from '../pricing/ratecard';
import type { RunAdmission } from '../quota/gate';
import { isBillable, priceBillable, shortOfFunds } from './guard';
import { type CostItem, FlowRunCosts } from './flow-run-costs';
import type { Before, ModelCall, OpenFlowRunInput, Ticket } from './flow-run-types';
import { type LedgerHandle, ledgerKey, sharedLedger } from './ledgers';
import { type Refusal, refusalFor } from './refusal';

/**
 * One Flowise prediction as a billed run, for nodes that meter calls
 * themselves (a metered chat model's `_generate`, a metered tool, Charge):
 * every call asks `before…` (paid first, or a refusal to answer with) and
 * reports `after…` / `fail…`. Business refusals are returned, never thrown.
 * The money rules are RunLedger's (reservation at the first paid call);
 * where its costs are seen is FlowRunCosts' (flow-run-costs.ts).
 */

export type { Before, FlowCharge, ModelCall, OpenFlowRunInput, Ticket } from './flow-run-types';

const runs = new Map<string, FlowRun>();
/** A run nobody used for this long is forgotten by the registry. */
const FORGET_MS = 15 * 60_000;

/**
 * The run of a prediction: the first node to ask opens it, the others of the
 * same prediction (same ledger, customer and run key) get the same object.
 * Nothing is reserved until the first paid call.
 */
export async function openFlowRun(input: OpenFlowRunInput): Promise<FlowRun> {
  const key = registryKey(input);
  const existing = runs.get(key);
  if (existing && !existing.closed) return existing;
  const run = new FlowRun(input, () => runs.get(key) === run && runs.delete(key));
  runs.set(key, run);
  return run;
}

function registryKey(i: Pick<OpenFlowRunInput, 'ledgerDatabase' | 'customerId' | 'runKey'>): string {
  return `${ledgerKey(i.ledgerDatabase)}\u0000${i.customerId ?? '-'}\u0000${i.runKey}`;
}

/**
 * The open run of this prediction, if a node of it already opened one: a node
 * joining it need not work out what only the opener's settings use (e.g. the
 * chatflow's Langfuse credentials, a database read).
 */
export function openedFlowRun(i: Pick<OpenFlowRunInput, 'ledgerDatabase' | 'customerId' | 'runKey'>): FlowRun | undefined {
  const run = runs.get(registryKey(i));
  return run && !run.closed ? run : undefined;
}

export class FlowRun {
  private refusal?: Refusal;
  private handle?: LedgerHandle;
  private card?: RateCard;
  private admission: RunAdmission | null = null;
  private admitting?: Promise<void>;
  private run?: RunLedger;
  private feeQuote: Awaited<ReturnType<typeof priceBillable>> | null = null;
  private segment = 0;
  private inFlight = 0;
  private settledAny = false;
  private idle?: NodeJS.Timeout;
  private forget?: NodeJS.Timeout;
  private endWanted = false;
  private readonly costs: FlowRunCosts;
  closed = false;

  constructor(
    private readonly i: OpenFlowRunInput,
    private readonly unregister: () => void,
  ) {
    if (i.refusal) this.refusal = i.refusal;
    else if (!i.customerId) this.refusal = refusalFor(new BillingError('UNAUTHORIZED', 'No customer for this run', {}), i.messages);
    this.costs = new FlowRunCosts(i, () => ({ planTier: this.admission?.tier, rateCardVersion: this.card?.version }));
  }

  /**
   * What console.log, util.inspect and JSON.stringify show of a run: its input holds the chatflow's Langfuse
   * secret key and the ledger database URL (a PostgreSQL password), and both were printed.
   */
  [inspect.custom](): object {
    return this.toJSON();
  }

  toJSON(): object {
    return { customerId: this.i.customerId, conversationId: this.i.conversationId, runKey: this.i.runKey, closed: this.closed, refused: this.refusal !== undefined };
  }

  /** The refusal this run answers with, once refused. */
  get refused(): Refusal | undefined {
    return this.refusal;
  }

  private get customerId(): string {
    return this.i.customerId!;
  }

  /**
   * Quota admission and the rate card, once per run; the money is reserved by the first paid call.
   * `withAvailable` (a guard's precheck): the admission also reads the available balance.
   */
  private admit(withAvailable = false): Promise<void> {
    this.admitting ??= (async () => {
      this.handle = await sharedLedger(this.i.ledgerDatabase);
      this.card = await this.handle.ledger.activeRateCard();
      this.feeQuote = this.i.runFee ? await priceBillable(this.handle, this.i.runFee.item, this.i.runFee.quantity) : null;
      if (this.i.checkSessions) this.admission = await this.handle.quota.admitRun({ customerId: this.customerId, conversationId: this.i.conversationId, ...(withAvailable ? { withAvailable } : {}) });
      const meta = billingMetadata({
        customerId: this.customerId,
        conversationId: this.i.conversationId,
        planTier: this.admission?.tier,
        quotaRemaining: this.admission ? this.admission.sessionsRemaining : undefined,
        rateCardVersion: this.card.version,
      });
      this.costs.traceMetadata(meta);
    })();
    return this.admitting;
  }

  /**
   * The checks a guard node makes before the flow runs, without reserving or
   * charging anything: identity (a refused run), quota admission, and whether
   * the available balance covers the run fee plus `minimumUsd`. Returns the
   * refusal to answer with, or null. The money is reserved by the first call.
   */
  async precheck(minimumUsd = '0'): Promise<Refusal | null> {
    // A prediction whose guard passes may never reach a metered step: the registry must still forget this run.
    this.forgetLater();
    if (this.refusal) return this.refusal;
    try {
      const minimum = parseUsd(minimumUsd, { field: 'minimumUsd' });
      const handle = await sharedLedger(this.i.ledgerDatabase);
      // A run that counts sessions reads the balance inside its admission (same round trip as the budget);
      // otherwise, or when the run was already admitted, on its own. Reads for a check: the money is held
      // atomically by the first call. The admission's refusal (quota, subscription, customer) comes first.
      const first = !this.admitting;
      await this.admit(true);
      const available = first && this.admission?.available !== undefined ? this.admission.available : (await handle.ledger.balance(this.customerId)).available;
      const need = (this.feeQuote?.amount ?? 0n) + minimum;
      if (available < need) throw await shortOfFunds(handle, { runKey: this.i.runKey, customerId: this.customerId, needed: need, available });
      return null;
    } catch (e) {
      return this.refuse(e);
    }
  }

  /** The run's money; a new segment (no fee) when an idle end already closed the previous one. */
  private ledgerRun(): RunLedger {
    // Synchronous: concurrent first calls share one run (and its admission).
    if (this.run && !this.run.ended) return this.run;
    const first = this.segment === 0;
    const runKey = first ? this.i.runKey : `${this.i.runKey}:seg${this.segment}`;
    this.segment++;
    const fee = first ? this.feeQuote : null;
    this.run = new RunLedger({
      ledger: this.handle!.ledger,
      customerId: this.customerId,
      runKey: (s) => `${runKey}:${s}`,
      actor: this.i.actor,
      rateCardVersion: this.card!.version,
      ttlMs: this.i.holdTtlMs,
      fee: fee && fee.amount > 0n ? { chargeType: fee.item, amount: fee.amount, quantity: fee.quantity } : null,
      computeReserve: null,
      budget: this.i.runBudgetUsd ? parseUsd(this.i.runBudgetUsd, { field: 'runBudgetUsd' }) : undefined,
      fundsWaitMs: this.i.fundsWaitMs ?? 10_000,
      metadata: (kind) => ({ ...this.i.metadata, kind, runKey: this.i.runKey, conversationId: this.i.conversationId }),
    });
    return this.run;
  }

  private refuse(e: unknown): Refusal {
    const r = refusalFor(e, this.i.messages);
    // Sticky: once refused, every later call of the prediction gets the same answer without the ledger.
    this.refusal ??= r;
    const line = `[flowise-billing] ${this.i.actor}: refused (${r.code}${this.i.customerId ? `, customer ${this.i.customerId}` : ''})`;
    if (r.kind === 'unavailable') (this.i.logger?.error ?? this.i.logger?.warn)?.call(this.i.logger, `${line}: ${(e as Error)?.message ?? String(e)}`);
    else this.i.logger?.warn(line);
    return this.refusal;
  }

  /** `byokCheck`: null for a tool; for a model call, whether it runs on the customer's key (and it may grow the reservation). */
  private async cover(amount: () => Promise<{ amount: Nanos; chargeType: string; quantity: string }>, callKey: string, byokCheck: boolean | null): Promise<{ step: StepHold; run: RunLedger } | Refusal> {
    if (this.refusal) return this.refusal;
    if (this.closed) return this.refuse(new Error('the run has ended'));
    this.inFlight++;
    clearTimeout(this.idle);
    try {
      await this.admit();
      if (byokCheck === false && this.admission && !this.admission.managedModels) throw new ByokRequiredError({ customerId: this.customerId, plan: this.admission.tier });
      const a = await amount();
      const run = this.ledgerRun();
      const step = await run.holdStep(a.amount, `${this.i.runKey}:${callKey}:hold`, {
        chargeType: a.chargeType, quantity: a.quantity, metadata: { ...this.i.metadata, kind: 'step', callKey, conversationId: this.i.conversationId },
      }, byokCheck !== null);
      return { step, run };
    } catch (e) {
      const refusal = this.refuse(e);
      // A refused run returns its reservation now (other runs of the customer may be waiting for it).
      this.endWanted = true;
      this.callDone();
      return refusal;
    }
  }

  /** Before a provider call: its maximum cost is covered (the first call admits the run), or the refusal to answer with. */
  async beforeModelCall(call: ModelCall): Promise<Before> {
    this.costs.adoptTrace(call.traceId);
    let promptEstimate = 0;
    let model = call.model;
    const maxOut = call.maxOutputTokens ?? this.i.maxOutputTokensCap ?? 4096;
    const r = await this.cover(
      async () => {
        promptEstimate = estimatePromptTokens(call.messages, call.tools);
        const q = priceTokens(this.card!, call.model, promptEstimate, maxOut);
        model = q.model;
        return { amount: q.amount, chargeType: q.item, quantity: q.quantity };
      },
      call.callKey,
      call.usesCustomerKey ?? false,
    );
    if (!('step' in r)) return { ok: false, refusal: r };
    return { ok: true, ticket: { kind: 'model', callKey: call.callKey, step: r.step, run: r.run, model, promptEstimate, observationId: call.observationId } };
  }

  /** After the provider answered: charges the reported usage (or the estimate of `text`). Never throws. */
  async afterModelCall(ticket: Ticket, result: { usage?: TokenCounts; text?: string }): Promise<{ charge?: Charge; fee?: Charge }> {
    const u = result.usage;
    // The cached parts as the handler keeps them (garbage ignored, never more than the input): a bad count must not lose the charge.
    if (u) return this.settleModel(ticket, { ...u, ...cacheParts(u.cacheReadTokens, u.cacheWriteTokens, u.inputTokens) }, 'usage');
    return this.settleModel(ticket, { inputTokens: ticket.promptEstimate, outputTokens: estimateTextTokens(result.text ?? '') }, 'estimate');
  }

  /**
   * The provider failed. STREAM-CUT RULE (as the handler's): a call that
   * streamed output is charged the prompt estimate plus the streamed tokens;
   * one that produced nothing is released.
   */
  async failModelCall(ticket: Ticket, result: { streamedText?: string } = {}): Promise<{ charge?: Charge; fee?: Charge }> {
    if (result.streamedText) return this.settleModel(ticket, { inputTokens: ticket.promptEstimate, outputTokens: estimateTextTokens(result.streamedText) }, 'stream cut short');
    return this.release(ticket);
  }

  private async settleModel(t: Ticket, usage: TokenCounts, usageSource: string): Promise<{ charge?: Charge; fee?: Charge }> {
    if (t.done) return {};
    t.done = true;
    try {
      const { inputTokens, outputTokens } = usage;
      const q = priceTokens(this.card!, t.model, inputTokens, outputTokens, usage);
      // Submitted together: one group commit for the call and (first time) the run fee.
      const [charge, fee] = await Promise.all([
        t.run.settleStep(t.step, q.amount, `${this.i.runKey}:${t.callKey}:settle`, {
          chargeType: q.item, quantity: q.quantity, metadata: { ...this.i.metadata, kind: 'llm', callKey: t.callKey, model: t.model ?? null, inputTokens, outputTokens, ...cacheMetadata(q), usageSource },
        }),
        this.feeAfterSettle(t.run),
      ]);
      this.costs.report([{ charge, name: `billing:${q.item}`, unit: 'token', quote: q }, feeItem(fee)], t.observationId);
      return { charge, fee };
    } catch (e) {
      this.logFailure('settle model call', e);
      return {};
    } finally {
      this.callDone();
    }
  }

  private async feeAfterSettle(run: RunLedger): Promise<Charge | undefined> {
    this.settledAny = true;
    try {
      return await run.captureFee();
    } catch (e) {
      this.logFailure('capture run fee', e);
      return undefined;
    }
  }

  private async release(t: Ticket): Promise<{ charge?: Charge; fee?: Charge }> {
    if (t.done) return {};
    t.done = true;
    try {
      await t.run.releaseStep(t.step, `${this.i.runKey}:${t.callKey}:release`);
    } catch (e) {
      this.logFailure('release', e);
    } finally {
      this.callDone();
    }
    return {};
  }

  /** Before a tool (or any priced step without tokens): `quantity` × the item's price is covered, or the refusal. */
  async beforeTool(call: { callKey: string; item: string; quantity: string | number }): Promise<Before> {
    let q: Awaited<ReturnType<typeof priceBillable>> | undefined;
    const r = await this.cover(
      async () => {
        if (!isBillable(call.item)) throw new ValidationError(`Unknown billable item "${call.item}"`, { field: 'item' });
        q = await priceBillable(this.handle!, call.item, call.quantity);
        return { amount: q.amount, chargeType: q.item, quantity: q.quantity };
      },
      call.callKey,
      null,
    );
    if (!('step' in r)) return { ok: false, refusal: r };
    return { ok: true, ticket: { kind: 'tool', callKey: call.callKey, step: r.step, run: r.run, promptEstimate: 0, item: q!.item, quantity: q!.quantity, unit: q!.unit } };
  }

  /** The tool succeeded: charges what was covered. Never throws. */
  async afterTool(t: Ticket): Promise<{ charge?: Charge; fee?: Charge }> {
    if (t.done) return {};
    t.done = true;
    try {
      const [charge, fee] = await Promise.all([
        t.run.settleStep(t.step, t.step.amount, `${this.i.runKey}:${t.callKey}:settle`, {
          chargeType: t.item, quantity: t.quantity, metadata: { ...this.i.metadata, kind: 'tool', callKey: t.callKey },
        }),
        this.feeAfterSettle(t.run),
      ]);
      this.costs.report([{ charge, name: `billing:${t.item}`, unit: t.unit ?? 'unit' }, feeItem(fee)]);
      return { charge, fee };
    } catch (e) {
      this.logFailure('settle tool', e);
      return {};
    } finally {
      this.callDone();
    }
  }

  async failTool(t: Ticket): Promise<void> {
    await this.release(t);
  }

  /** A priced step with no provider behind it (the Charge node): covered and charged at once, or the refusal. */
  async charge(call: { callKey: string; item: string; quantity: string | number }): Promise<{ ok: true; charge?: Charge; fee?: Charge } | { ok: false; refusal: Refusal }> {
    const b = await this.beforeTool(call);
    if (!b.ok) return b;
    return { ok: true, ...(await this.afterTool(b.ticket)) };
  }

  /**
   * Returns the unused reservation now (after the calls in flight); later calls open a new segment.
   * `unhurried` (the idle end): the return may ride along with the ledger's next transaction.
   */
  async end(unhurried = false): Promise<void> {
    this.endWanted = true;
    if (this.inFlight > 0) return;
    clearTimeout(this.idle);
    this.endWanted = false;
    const run = this.run;
    if (!run || run.ended) return;
    try {
      const r = await run.finish(null, { chargeFee: this.settledAny, unhurried });
      this.costs.report([feeItem(r.fee)]);
    } catch (e) {
      if (e instanceof RunFinishError) this.costs.report([feeItem(e.partial.fee)]);
      this.logFailure('end run', e);
    }
  }

  /** Ends the run for good and forgets it (the next prediction with this key starts afresh). */
  async close(): Promise<void> {
    clearTimeout(this.forget);
    await this.end();
    this.closed = true;
    this.unregister();
  }

  private callDone(): void {
    this.inFlight--;
    if (this.inFlight > 0) return;
    if (this.endWanted) {
      void this.end();
      return;
    }
    clearTimeout(this.idle);
    this.idle = setTimeout(() => void this.end(true), this.i.idleMs ?? 2_000);
    this.idle.unref?.();
    this.forgetLater();
  }

  /** Forgotten (unregistered) long after the prediction can still be running; a later call still works. */
  private forgetLater(): void {
    clearTimeout(this.forget);
    this.forget = setTimeout(() => void this.close(), FORGET_MS);
    this.forget.unref?.();
  }

  private logFailure(what: string, e: unknown): void {
    (this.i.logger?.error ?? this.i.logger?.warn)?.call(this.i.logger, `[flowise-billing] ${this.i.actor}: ${what} failed: ${(e as Error)?.message ?? String(e)}`);
  }
}

/** A run fee's charge as a reported item. */
function feeItem(fee: Charge | undefined): CostItem {
  return { charge: fee, name: `billing:${fee?.chargeType ?? 'run-fee'}`, unit: 'run' };
}
