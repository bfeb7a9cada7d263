import type { WarnLogger } from '../identity/customer';
import type { LangfuseCredentials } from '../langfuse/reporter';
import type { RunLedger, StepHold } from '../metering/run-ledger';
import type { RunFee } from './guard';
import type { Refusal, RefusalTemplates } from './refusal';

/** What a FlowRun (flow-run.ts) is opened with, takes and hands out. */

export interface FlowCharge {
  readonly chargeId: string;
  readonly name: string;
  readonly unit: string;
  readonly quantity: string;
  readonly costUsd: string;
  readonly metadata: Record<string, unknown>;
  readonly at: Date;
  /** The LangChain run (generation) this charge belongs to, when known. */
  readonly observationId?: string;
}

export interface OpenFlowRunInput {
  /** From the Billing Ledger credential (empty: the default location). */
  readonly ledgerDatabase?: string;
  /** The resolved customer, or the refusal resolving it produced (the run then refuses every call). */
  readonly customerId?: string;
  readonly refusal?: Refusal;
  readonly conversationId: string;
  /** The prediction's retry-stable key (flowRunKey); every node of one prediction passes the same. */
  readonly runKey: string;
  readonly actor: string;
  readonly runFee: RunFee | null;
  /** Reserved for the run's steps at admission instead of the first call's maximum (USD decimal). */
  readonly runBudgetUsd?: string;
  /** Output tokens held for a call that sets no max tokens (default 4096). */
  readonly maxOutputTokensCap?: number;
  /** Admit the session against the plan (quota, budget, subscription, managed models). */
  readonly checkSessions: boolean;
  readonly messages?: RefusalTemplates;
  /** Costs go onto this Langfuse trace (agentflow: parentTraceIds.langFuse.trace) … */
  readonly traceId?: string;
  /** … with this project's credentials (or only through onCharge). */
  readonly langfuse?: LangfuseCredentials;
  /** Every charge of the run, after the ledger took it (e.g. Flowise's own Langfuse client). */
  readonly onCharge?: (c: FlowCharge) => void;
  /** The billing metadata for the run's trace, once admitted. */
  readonly onTraceMetadata?: (metadata: Record<string, string | number>) => void;
  readonly logger?: WarnLogger & { error?(m: string): void };
  /**
   * The run ends (unused reservation returned) after this long without a call in flight (default 2 s);
   * a later call of the same prediction then opens a fee-less continuation. Call `end()` when the prediction is done.
   */
  readonly idleMs?: number;
  /** How long a call refused for funds may wait for this customer's other runs in this process to return money (default 10 s; 0: never). */
  readonly fundsWaitMs?: number;
  readonly holdTtlMs?: number;
  readonly metadata?: Record<string, unknown>;
}

export interface ModelCall {
  /** Stable for the call, unique in the run: e.g. `${nodeId}:${runManager.runId}`. */
  readonly callKey: string;
  readonly model: string | undefined;
  readonly messages: readonly unknown[];
  readonly tools?: unknown;
  readonly maxOutputTokens?: number;
  /** The provider call uses the customer's own key (BYOK). Never the key itself. */
  readonly usesCustomerKey?: boolean;
  /** The Langfuse generation of this call (the LangChain run id), for chatflows without a trace id. */
  readonly observationId?: string;
  /** The Langfuse trace this call runs in, when the caller can see it (the run adopts the first one). */
  readonly traceId?: string;
}

export type Before = { readonly ok: true; readonly ticket: Ticket } | { readonly ok: false; readonly refusal: Refusal };

/** What `before…` hands out and `after…`/`fail…` take back. Opaque to callers. */
export interface Ticket {
  readonly kind: 'model' | 'tool';
  readonly callKey: string;
  readonly step: StepHold;
  readonly run: RunLedger;
  readonly model?: string;
  readonly promptEstimate: number;
  readonly item?: string;
  readonly quantity?: string;
  readonly unit?: string;
  readonly observationId?: string;
  done?: boolean;
}
