import type { Charge } from '../ledger/types';
import type { Nanos } from '../money';
import type { ChargeType, RateCard } from '../pricing/ratecard';
import type { RunAdmission } from '../quota/gate';
import type { StreamCounts } from './estimate';
import type { RunLedger, StepHold } from './run-ledger';

/** The metering handler's per-run bookkeeping (shared by copies of one handler). */

export type Metadata = Record<string, unknown>;

/** What the handler keeps for a root run (a run with no parent this handler has seen). */
export interface RootState {
  readonly id: string;
  readonly startedAt: number;
  readonly startTime: Date;
  /** What the root run itself is: an LLM call attached to directly, a chain, a tool. */
  readonly kind: 'chain' | 'llm' | 'tool';
  card?: RateCard;
  admission?: RunAdmission;
  /** The run's money: reservation, step holds, fee and compute (set once the rate card is known). */
  run?: RunLedger;
  /** Set when billing refused a step (funds, budget, BYOK): the run then pays no fee and no compute. */
  refused: boolean;
  /** Billing fields every child run's metadata receives (updated as the run goes). */
  dynamic: Record<string, string | number>;
  /** Net cost of the run so far (what the ledger took). */
  cost: Nanos;
  lastBalance?: Nanos;
  readonly steps: Set<string>;
  readonly chargeIds: string[];
  /**
   * The run has a parent this handler never saw (e.g. attached to a model inside
   * someone else's chain): the Langfuse trace id belongs to that unseen root.
   */
  readonly nested: boolean;
  /**
   * A nested chain's costs that have no observation of their own in Langfuse (fee, compute, tools): they
   * ride on `carrier`, the run's first charged generation (see RunRecorder.recorded).
   */
  carried?: { amount: Nanos; readonly chargeIds: string[] };
  carrier?: { readonly id: string; readonly amount: Nanos; readonly chargeId: string; readonly name: string };
}

/** What the handler keeps for one step (chain, LLM call or tool), keyed by run id. */
export interface StepState {
  readonly runId: string;
  readonly rootId: string;
  readonly parentRunId?: string;
  readonly kind: 'chain' | 'llm' | 'tool';
  readonly startTime: Date;
  hold?: StepHold;
  model?: string;
  promptEstimate: number;
  streamedChunks: number;
  streamedText: string;
  /** The usage the call's streamed chunks carried, summed (see withStreamedCounts). */
  streamedUsage?: StreamCounts;
  /** handleLLMNewToken reports, empty chunks included (signs of life for the call sweep). */
  tokenEvents: number;
  /** `tokenEvents` at the call sweep's last look, and since when it has not changed. */
  sweptTokens: number;
  quietSince?: number;
  /** Keep-alives the call sweep made for the run while this call was in flight (numbers their keys). */
  keptAlive?: number;
  toolName?: string;
  /**
   * An end of this LLM call is under way (LangChain's end or error, the abort signal, an idle sweep): the
   * others leave it alone. Two enders at once had the second end the run while the first's settle was in flight.
   */
  ending?: boolean;
  /**
   * The call sweep is charging this call's prompt estimate (CallWatch.unanswered); an end or
   * error LangChain reports meanwhile waits here for that charge, then charges the difference.
   */
  unanswered?: { endedWith?: { output: unknown } };
  /** Removes the listener on the call's abort signal (see CallWatch.watchAbort). */
  stopWatching?: () => void;
  chargeType?: ChargeType;
  quantity?: string;
  toolAmount?: Nanos;
}

/** One settled charge as the handler saw it (for callers, tests and the demo). */
export interface MeteredCharge {
  readonly rootRunId: string;
  readonly runId: string;
  readonly kind: 'llm' | 'tool' | 'fee' | 'compute';
  readonly charge: Charge;
}

/** Per-run outcome: every charge of a finished root run and its total. */
export interface MeteredRun {
  readonly rootRunId: string;
  readonly cost: Nanos;
  readonly chargeIds: readonly string[];
  readonly balanceAfter?: Nanos;
  readonly admission?: RunAdmission;
  readonly failed: boolean;
  /** Billing refused a step (funds or budget): the fee and compute time were released. */
  readonly refused: boolean;
}

/**
 * An LLM call with no answer for a whole hold lifetime, charged its prompt estimate by the call sweep (a
 * stream dropped before its first token report cannot be told from a call still waiting). Kept until its late
 * end or error, which charge or refund the difference to its actual usage; at most 1,000 kept.
 */
export interface ProvisionalCall {
  readonly root: RootState;
  readonly parentRunId?: string;
  readonly model?: string;
  readonly promptEstimate: number;
  readonly startTime: Date;
  readonly charge: Charge;
}

export interface SharedState {
  readonly roots: Map<string, RootState>;
  readonly steps: Map<string, StepState>;
  readonly provisional: Map<string, ProvisionalCall>;
  readonly charges: MeteredCharge[];
  readonly runs: MeteredRun[];
  readonly failures: Array<{ error: unknown; context: Metadata }>;
}

/**
 * `priced` with the card's version. Not `{ ...priced, rateCardVersion }`: on Node 20's V8 an object cloned
 * by spread and then given a property makes the young generation keep garbage (each scavenge copied and
 * promoted about 9 % of what the call allocated; docs/speed.md, session 19).
 */
export function withCardVersion<T extends object>(priced: T, rateCardVersion: string): T & { rateCardVersion: string } {
  const out = Object.assign({}, priced) as T & { rateCardVersion: string };
  out.rateCardVersion = rateCardVersion;
  return out;
}

const MAX_KEPT = 1000;

export const pushBounded = <T>(arr: T[], v: T) => {
  arr.push(v);
  if (arr.length > MAX_KEPT) arr.splice(0, arr.length - MAX_KEPT);
};

/** Map.set keeping the latest MAX_KEPT entries (a Map iterates in insertion order: the first is the oldest). */
export const setBounded = <K, V>(map: Map<K, V>, k: K, v: V) => {
  map.set(k, v);
  if (map.size > MAX_KEPT) map.delete(map.keys().next().value as K);
};

export function runNameOf(serialized: unknown, runName?: string): string {
  if (runName) return runName;
  const s = serialized as { name?: unknown; id?: unknown } | undefined;
  if (s && typeof s.name === 'string') return s.name;
  if (s && Array.isArray(s.id) && s.id.length) return String(s.id[s.id.length - 1]);
  return 'unknown';
}

