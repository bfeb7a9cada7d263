import type { Charge } from '../ledger/types';
import { billingMetadata, BILLING_METADATA_KEYS } from '../langfuse/metadata';
import { type LangfuseCostReporter, tokenCostSplit } from '../langfuse/reporter';
import { formatUsd } from '../money';
import type { TokenQuote } from '../pricing/price';
import type { ResolvedBillingOptions } from './options';
import { type MeteredCharge, type Metadata, pushBounded, type RootState, type SharedState } from './run-state';

/** Spread for an absent field: one shared empty object instead of a new `{}` on every charge. */
export const NONE: Readonly<Record<string, never>> = Object.freeze({});

/**
 * What the handler records for every charge it made: the run's totals, the
 * charge list, and the cost on the run's Langfuse trace (so that, per run,
 * the sum of Langfuse costs equals what the ledger took).
 */
export class RunRecorder {
  constructor(
    private readonly options: ResolvedBillingOptions,
    private readonly state: SharedState,
    private readonly reporter: LangfuseCostReporter | undefined,
  ) {}

  chargeMetadata(root: RootState, runId: string, extra: Metadata): Metadata {
    return {
      source: 'langchain',
      rootRunId: root.id,
      runId,
      conversationId: this.options.conversationId,
      ...(this.options.messageId ? { messageId: this.options.messageId } : NONE),
      ...(this.options.usageCategory ? { usageCategory: this.options.usageCategory } : NONE),
      ...(this.options.costCenter ? { costCenter: this.options.costCenter } : NONE),
      // Where the cost went in Langfuse, so a reconciler can re-send it.
      langfuseTraceId: root.nested ? null : root.id,
      ...extra,
    };
  }

  recorded(
    root: RootState,
    runId: string,
    kind: MeteredCharge['kind'],
    charge: Charge,
    lf: { name: string; observationId: string; parent?: string; model?: string; quote?: TokenQuote; startTime?: Date },
  ): void {
    root.cost += charge.amount;
    root.lastBalance = charge.balanceAfter;
    root.dynamic[BILLING_METADATA_KEYS.balanceAfterUsd] = formatUsd(charge.balanceAfter);
    root.chargeIds.push(charge.id);
    pushBounded(this.state.charges, { rootRunId: root.id, runId, kind, charge });
    if (!this.reporter) return;
    if (root.nested && lf.observationId !== runId) {
      // Without the trace id only an existing generation can be updated: a run that is one LLM call
      // carries its fee and compute on its own generation (the cumulative cost, as updates replace it).
      if (root.kind === 'llm') this.reporter.reportCharge({ observationId: root.id, name: lf.name, cost: { total: root.cost }, metadata: { [BILLING_METADATA_KEYS.chargeIds]: root.chargeIds.join(','), [BILLING_METADATA_KEYS.costUsd]: formatUsd(root.cost) } });
      else {
        // A chain in someone else's trace: its fee, compute and tools were dropped (the trace showed less than
        // the ledger took). They ride on the run's first charged generation, once there is one.
        const c = (root.carried ??= { amount: 0n, chargeIds: [] });
        c.amount += charge.amount;
        c.chargeIds.push(charge.id);
        this.reportCarrier(root);
      }
      return;
    }
    // Token charges split input/output (and cache reads/writes) as priced; when a shortfall cut the collected amount, only the total is exact.
    const split = lf.quote && charge.shortfall === 0n && charge.amount === lf.quote.amount ? tokenCostSplit(lf.quote) : {};
    this.reporter.reportCharge({
      traceId: root.nested ? undefined : root.id,
      observationId: lf.observationId,
      parentObservationId: lf.parent,
      name: lf.name,
      model: lf.model,
      startTime: lf.startTime,
      endTime: new Date(),
      cost: { total: charge.amount, ...split },
      metadata: {
        billing_charge_id: charge.id,
        [BILLING_METADATA_KEYS.costUsd]: formatUsd(charge.amount),
        billing_charge_type: charge.chargeType,
        billing_quantity: charge.quantity,
        ...(charge.shortfall > 0n ? { billing_shortfall_usd: formatUsd(charge.shortfall) } : {}),
        ...billingMetadata({ customerId: this.options.customerId, rateCardVersion: charge.rateCardVersion ?? undefined, balanceAfter: charge.balanceAfter }),
      },
    });
    if (root.nested && root.kind !== 'llm' && kind === 'llm' && !root.carrier) {
      root.carrier = { id: runId, amount: charge.amount, chargeId: charge.id, name: lf.name };
      this.reportCarrier(root);
    }
  }

  /** Part of a call's charge was refunded (CallWatch.lateEnd): the run's total and the generation's cost follow. */
  refunded(root: RootState, runId: string, charge: Charge, amount: bigint, name: string): void {
    root.cost -= amount;
    if (!this.reporter || root.nested) return;
    this.reporter.reportCharge({
      traceId: root.id,
      observationId: runId,
      name: `billing:${name}`,
      cost: { total: charge.amount - amount },
      metadata: { billing_charge_id: charge.id, [BILLING_METADATA_KEYS.costUsd]: formatUsd(charge.amount - amount), billing_refunded_usd: formatUsd(amount) },
    });
  }

  /** A nested chain's first generation, with its own cost plus the run's costs that have no observation of their own. */
  private reportCarrier(root: RootState): void {
    const g = root.carrier;
    if (!g || !root.carried || !this.reporter) return;
    const total = g.amount + root.carried.amount;
    this.reporter.reportCharge({
      observationId: g.id,
      name: g.name,
      cost: { total },
      metadata: { [BILLING_METADATA_KEYS.chargeIds]: [g.chargeId, ...root.carried.chargeIds].join(','), [BILLING_METADATA_KEYS.costUsd]: formatUsd(total) },
    });
  }

  /** The run's billing metadata onto its trace (a nested run does not know its trace). */
  finished(root: RootState, refused: boolean): void {
    if (root.nested) return;
    this.reporter?.reportTraceMetadata({
      traceId: root.id,
      timestamp: root.startTime,
      metadata: Object.assign({}, root.dynamic, billingMetadata({ balanceAfter: root.lastBalance, runCost: root.cost }), { billing_refused: refused }),
    });
  }
}
