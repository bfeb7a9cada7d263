import { inspect } from 'node:util';
import type { Serialized } from '@langchain/core/load/serializable';
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import { BILLING_METADATA_KEYS } from '../langfuse/metadata';
import { langfuseReporterFor, type LangfuseCostReporter } from '../langfuse/reporter';
import { priceChargeType, priceTokens } from '../pricing/price';
import {
  addTokenCounts,
  choicesOf,
  chunkUsageOf,
  estimatePromptTokens,
  maxOutputTokensOf,
  modelNameOf,
  signalOf,
  streamedText,
  toolsOf,
  usageOf,
} from './estimate';
import { type SweepTarget, sweepInterval, watchCalls } from './call-sweep';
import { CallWatch } from './call-watch';
import { ByokRequiredError } from '../errors';
import { RunRecorder } from './run-report';
import { RunTracker } from './run-tracker';
import { type MeteredCharge, type MeteredRun, type Metadata, runNameOf, type SharedState } from './run-state';
import { type BillingHandlerOptions, parseBillingHandlerOptions, type ResolvedBillingOptions } from './options';

export type { MeteredCharge, MeteredRun };

/**
 * Meters LangChain runs: admission, per-run fee and compute time for each root
 * run; a hold before every LLM call and tool, settled with actual usage after,
 * released on error. See README "Metering LangChain runs" for the rules.
 *
 * It aborts a run only by throwing from a start callback (`raiseError`), which
 * LangChain then awaits: InsufficientFundsError, QuotaExceededError and
 * BudgetExceededError propagate out of `invoke()` and the provider is never
 * called. End/error callbacks never throw: once a provider answered, the run's
 * result is returned even if the ledger write failed (the hold then expires and
 * the failure is reported to `onError` and kept in `failures`).
 */
export class BillingCallbackHandler extends BaseCallbackHandler {
  name = 'BillingCallbackHandler';
  override raiseError = true;
  override awaitHandlers = true;

  readonly options: ResolvedBillingOptions;
  private readonly state: SharedState;
  private readonly reporter?: LangfuseCostReporter;
  private readonly recorder: RunRecorder;
  /** Root runs and their steps' money (run-tracker.ts); the calls LangChain may never end (call-watch.ts). */
  private readonly tracker: RunTracker;
  private readonly calls: CallWatch;
  /** What the process's call sweep calls (one per shared state: copies of this handler share it). */
  private readonly sweeper: SweepTarget;

  constructor(input: BillingHandlerOptions | BillingCallbackHandler) {
    // LangChain's copy() calls `new this.constructor(this)`: share options and state.
    const from = input instanceof BillingCallbackHandler ? input : undefined;
    super({ raiseError: true });
    this.raiseError = true;
    this.awaitHandlers = true;
    this.options = from ? from.options : parseBillingHandlerOptions(input);
    this.state = from ? from.state : { roots: new Map(), steps: new Map(), provisional: new Map(), charges: [], runs: [], failures: [] };
    this.reporter = from ? from.reporter : this.options.langfuse ? langfuseReporterFor(this.options.langfuse) : undefined;
    this.recorder = new RunRecorder(this.options, this.state, this.reporter);
    this.tracker = new RunTracker(this.options, this.state, this.recorder);
    this.calls = new CallWatch(this.tracker);
    this.sweeper = from ? from.sweeper : this.calls;
  }

  /** Charges settled by this handler, newest last (at most 1,000 kept). */
  get charges(): readonly MeteredCharge[] {
    return this.state.charges;
  }
  /** Finished root runs, newest last (at most 1,000 kept). */
  get runs(): readonly MeteredRun[] {
    return this.state.runs;
  }
  /** Ledger writes after a step that failed (never thrown into the run). */
  get failures(): ReadonlyArray<{ error: unknown; context: Metadata }> {
    return this.state.failures;
  }
  /** Runs currently in flight (roots and steps). */
  get inFlight(): { roots: number; steps: number } {
    return { roots: this.state.roots.size, steps: this.state.steps.size };
  }

  /**
   * What console.log and util.inspect show of the handler (and of a RunnableConfig that carries it): its
   * options hold the Langfuse secret key and its reporter the SDK client built with it, so neither is shown.
   */
  [inspect.custom](): object {
    return { name: this.name, customerId: this.options.customerId, conversationId: this.options.conversationId, langfuse: this.reporter ? 'configured' : 'none', inFlight: this.inFlight };
  }

  /** The static billing fields for run metadata (see billingRunConfig). */
  billingMetadata(): Record<string, string | number> {
    return this.tracker.billingMetadata();
  }

  /** Flushes cost reports to Langfuse, waiting at most `timeoutMs`; true when all were delivered in time. */
  async flushLangfuse(timeoutMs = 2000): Promise<boolean> {
    return this.reporter ? this.reporter.flush(timeoutMs) : true;
  }

  // ---- chains -------------------------------------------------------------

  override async handleChainStart(_chain: Serialized, _inputs: unknown, runId: string, parentRunId?: string, _tags?: string[], metadata?: Metadata): Promise<void> {
    await this.tracker.enter('chain', runId, parentRunId, metadata);
  }

  override async handleChainEnd(_outputs: unknown, runId: string): Promise<void> {
    await this.tracker.leave(runId, false);
  }

  override async handleChainError(_err: unknown, runId: string): Promise<void> {
    await this.tracker.leave(runId, true);
  }

  // ---- LLM calls ------------------------------------------------------------

  override handleChatModelStart(_llm: Serialized, messages: unknown[][], runId: string, parentRunId?: string, extraParams?: Metadata, _tags?: string[], metadata?: Metadata): Promise<void> {
    return this.llmStart(messages[0] ?? [], runId, parentRunId, extraParams, metadata);
  }

  override async handleLLMStart(_llm: Serialized, prompts: string[], runId: string, parentRunId?: string, extraParams?: Metadata, _tags?: string[], metadata?: Metadata): Promise<void> {
    await this.llmStart(prompts.slice(0, 1), runId, parentRunId, extraParams, metadata);
  }

  private async llmStart(messages: readonly unknown[], runId: string, parentRunId: string | undefined, extraParams: Metadata | undefined, metadata: Metadata | undefined): Promise<void> {
    const { step, root, replay } = await this.tracker.enter('llm', runId, parentRunId, metadata);
    if (replay && step.hold) return;
    const o = this.options;
    if (root.admission && !root.admission.managedModels && !o.usesCustomerKey) {
      // BYOK plan: the operator's credential is never spent for this customer.
      root.refused = true;
      await this.tracker.leave(runId, true);
      throw new ByokRequiredError({ customerId: o.customerId, plan: root.admission.tier });
    }
    step.model = modelNameOf(extraParams, metadata);
    step.promptEstimate = estimatePromptTokens(messages, toolsOf(extraParams));
    const maxOut = (maxOutputTokensOf(extraParams, metadata) ?? o.maxOutputTokensCap) * choicesOf(extraParams);
    const q = priceTokens(root.card!, step.model, step.promptEstimate, maxOut);
    await this.tracker.holdStep(root, step, q.amount, {
      chargeType: q.item,
      quantity: q.quantity,
      metadata: this.recorder.chargeMetadata(root, runId, { kind: 'llm', model: step.model ?? null, estimate: { inputTokens: step.promptEstimate, outputTokens: maxOut } }),
    }, metadata);
    this.calls.watchAbort(step, signalOf(extraParams));
    watchCalls(this.sweeper, sweepInterval(root.run!.lifetimeMs));
  }

  override async handleLLMNewToken(token: string, _idx: unknown, runId: string, _parentRunId?: string, _tags?: string[], fields?: unknown): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    // Any report, even an empty chunk's, is a sign of life for the call sweep.
    step.tokenEvents++;
    step.streamedUsage = addTokenCounts(step.streamedUsage, chunkUsageOf(fields));
    const text = streamedText(token, fields);
    if (text) {
      step.streamedChunks++;
      step.streamedText += text;
    }
  }

  override async handleLLMEnd(output: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return this.calls.lateEnd(runId, output);
    if (step.unanswered) step.unanswered.endedWith ??= { output };
    if (step.ending) return;
    step.ending = true;
    await this.tracker.settleTokens(step, usageOf(output, step.promptEstimate, step.streamedUsage));
    await this.tracker.leave(runId, false);
  }

  /**
   * STREAM-CUT RULE: an LLM call that fails after it streamed output is charged
   * the prompt (its estimate; providers bill the whole prompt once generation
   * started) plus the output it produced: max(number of non-empty chunks,
   * estimate of the streamed text). A call that failed before any output is released.
   */
  override async handleLLMError(_err: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return this.calls.lateEnd(runId, undefined);
    if (step.unanswered) step.unanswered.endedWith ??= { output: undefined };
    await this.calls.cut(step, 0, 'stream cut short');
  }

  // ---- tools ------------------------------------------------------------------

  override async handleToolStart(tool: Serialized, _input: string, runId: string, parentRunId?: string, _tags?: string[], metadata?: Metadata, runName?: string): Promise<void> {
    const { step, root, replay } = await this.tracker.enter('tool', runId, parentRunId, metadata);
    if (replay && step.hold) return;
    const name = runNameOf(tool, runName);
    const price = this.options.tools[name] ?? this.options.tools['*'];
    step.toolName = name;
    if (!price) return;
    const q = priceChargeType(root.card!, price.chargeType, price.quantity);
    step.chargeType = price.chargeType;
    step.quantity = q.quantity;
    step.toolAmount = q.amount;
    await this.tracker.holdStep(root, step, q.amount, { chargeType: price.chargeType, quantity: q.quantity, metadata: this.recorder.chargeMetadata(root, runId, { kind: 'tool', tool: name }) });
    // Drawn from the reservation: kept alive like a model call that has no token yet (see CallWatch.sweep).
    if (step.hold?.via === 'reservation') watchCalls(this.sweeper, sweepInterval(root.run!.lifetimeMs));
  }

  override async handleToolEnd(_output: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    const root = this.state.roots.get(step.rootId);
    if (root && step.toolAmount !== undefined) {
      const charge = await this.tracker.settleStep(root, step, step.toolAmount, { chargeType: step.chargeType, quantity: step.quantity, metadata: this.recorder.chargeMetadata(root, runId, { kind: 'tool', tool: step.toolName ?? null }) });
      if (charge) this.recorder.recorded(root, runId, 'tool', charge, { name: `billing:tool:${step.toolName}`, observationId: `billing-${charge.id}`, parent: runId, startTime: step.startTime });
    }
    await this.tracker.leave(runId, false);
  }

  override async handleToolError(_err: unknown, runId: string): Promise<void> {
    const step = this.state.steps.get(runId);
    if (!step) return;
    await this.tracker.releaseHold(step, 'tool error');
    await this.tracker.leave(runId, true);
  }

  // ---- retrievers: tracked so their children find the root; not priced -----

  override async handleRetrieverStart(_r: Serialized, _q: string, runId: string, parentRunId?: string, _tags?: string[], metadata?: Metadata): Promise<void> {
    await this.tracker.enter('chain', runId, parentRunId, metadata);
  }
  override async handleRetrieverEnd(_docs: unknown, runId: string): Promise<void> {
    await this.tracker.leave(runId, false);
  }
  override async handleRetrieverError(_err: unknown, runId: string): Promise<void> {
    await this.tracker.leave(runId, true);
  }
}

export { BILLING_METADATA_KEYS };
