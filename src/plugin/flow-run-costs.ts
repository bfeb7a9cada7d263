import { billingMetadata, BILLING_METADATA_KEYS } from '../langfuse/metadata';
import { type ChargeReport, type LangfuseCostReporter, langfuseReporterFor, tokenCostSplit } from '../langfuse/reporter';
import type { Charge } from '../ledger/types';
import { formatUsd } from '../money';
import type { TokenQuote } from '../pricing/price';
import type { FlowCharge, OpenFlowRunInput } from './flow-run-types';

/** A charge a run took, named as it is reported (e.g. `billing:gpt-4o-mini`, unit `token`). */
export interface CostItem {
  readonly charge?: Charge;
  readonly name: string;
  readonly unit: string;
  /** A token charge's quote: its cost is reported split by kind of token. */
  readonly quote?: TokenQuote;
}

/** The cost of one charge; split as priced unless a shortfall cut what was collected (only the total is exact then). */
function costOf(c: Charge, quote: TokenQuote | undefined): ChargeReport['cost'] {
  return { total: c.amount, ...(quote && c.shortfall === 0n && c.amount === quote.amount ? tokenCostSplit(quote) : {}) };
}

/** What the run knows once admitted, read when a cost is reported. */
interface RunContext {
  /** null: a plan with no tier (reported as "none"). */
  readonly planTier?: string | null;
  readonly rateCardVersion?: string;
}

/**
 * Where a FlowRun's costs are seen: the chatflow's Langfuse project (on the
 * run's trace, or on each call's own generation when the run has no trace
 * id) and the caller's `onCharge`. Observing never fails or delays a run:
 * billing never depends on it.
 */
export class FlowRunCosts {
  private readonly reporter?: LangfuseCostReporter;
  /** The Langfuse trace costs go to: the run's, or the first one a call names. */
  private traceId?: string;
  private metadata?: Record<string, string | number>;

  constructor(
    private readonly i: Pick<OpenFlowRunInput, 'customerId' | 'conversationId' | 'traceId' | 'langfuse' | 'onCharge' | 'onTraceMetadata'>,
    private readonly context: () => RunContext,
  ) {
    this.traceId = i.traceId;
    try {
      this.reporter = i.langfuse ? langfuseReporterFor(i.langfuse) : undefined;
    } catch {
      // Bad analytics settings never stop billing.
    }
  }

  /** The run's billing metadata, once admitted: to the caller, and onto the trace when there is one. */
  traceMetadata(metadata: Record<string, string | number>): void {
    this.metadata = metadata;
    observe(() => this.i.onTraceMetadata?.(metadata));
    this.reportTraceMetadata();
  }

  /** A call names the Langfuse trace it runs in (chatflows: the LangChain Langfuse handler's trace). */
  adoptTrace(traceId: string | undefined): void {
    if (!traceId || this.traceId) return;
    this.traceId = traceId;
    this.reportTraceMetadata();
  }

  /** The charges one call (or the run's end) took; `observationId`: the call's Langfuse generation. */
  report(items: readonly CostItem[], observationId?: string): void {
    // Nobody observes the run's charges (no Langfuse, no callback): nothing to build.
    if (!this.i.onCharge && !this.reporter) return;
    const list = items.filter((x): x is CostItem & { charge: Charge } => !!x.charge);
    if (!list.length) return;
    const customerId = this.i.customerId!;
    const { planTier, rateCardVersion } = this.context();
    for (const { charge: c, name, unit, quote } of list) {
      const fc: FlowCharge = {
        chargeId: c.id,
        name,
        unit,
        quantity: c.quantity ?? '1',
        costUsd: formatUsd(c.amount),
        at: new Date(),
        observationId,
        metadata: {
          ...billingMetadata({ customerId, conversationId: this.i.conversationId, rateCardVersion: c.rateCardVersion ?? undefined, balanceAfter: c.balanceAfter, planTier }),
          billing_charge_type: c.chargeType,
          billing_quantity: c.quantity,
        },
      };
      observe(() => this.i.onCharge?.(fc));
      if (this.reporter && this.traceId) {
        observe(() =>
          this.reporter!.reportCharge({ traceId: this.traceId, observationId: `billing-${c.id}`, parentObservationId: observationId, name, startTime: fc.at, endTime: fc.at, cost: costOf(c, quote), metadata: { ...fc.metadata, [BILLING_METADATA_KEYS.chargeId]: c.id, [BILLING_METADATA_KEYS.costUsd]: fc.costUsd } }),
        );
      }
    }
    // No trace id (a chatflow): the call's own generation carries the cost of everything this call settled (its tokens and the fee).
    if (this.reporter && !this.traceId && observationId) {
      const total = list.reduce((a, x) => a + x.charge.amount, 0n);
      // Split only when the tokens are all it carries (a fee has no token kind).
      const cost = list.length === 1 ? costOf(list[0]!.charge, list[0]!.quote) : { total };
      observe(() =>
        this.reporter!.reportCharge({
          observationId, name: list[0]!.name, cost,
          metadata: { ...billingMetadata({ customerId, conversationId: this.i.conversationId, planTier, rateCardVersion }), [BILLING_METADATA_KEYS.chargeIds]: list.map((x) => x.charge.id).join(','), [BILLING_METADATA_KEYS.costUsd]: formatUsd(total) },
        }),
      );
    }
  }

  private reportTraceMetadata(): void {
    if (this.reporter && this.traceId && this.metadata) {
      const traceId = this.traceId;
      const metadata = this.metadata;
      observe(() => this.reporter!.reportTraceMetadata({ traceId, metadata }));
    }
  }
}

/** An observer never fails a run. */
function observe(fn: () => void): void {
  try {
    fn();
  } catch {
    // billing never depends on an observer
  }
}
