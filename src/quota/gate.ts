/**
 * What the metering layer asks before a run starts: may this customer run in
 * this conversation now? The quota service implements it; the metering
 * handler and the Flowise nodes depend only on this interface.
 */
export interface RunAdmission {
  /** Whether this message opened a new session or continued one. */
  readonly session: 'new' | 'existing';
  readonly sessionId: string;
  /** Plan id ("free", "starter", …), null when the customer has no subscription. */
  readonly tier: string | null;
  readonly sessionsUsed: number;
  /** null when the plan has no session limit. */
  readonly sessionsLimit: number | null;
  readonly sessionsRemaining: number | null;
  readonly periodStart: string | null;
  readonly periodEnd: string | null;
  /** Whether the plan lets the customer use operator-paid ("managed") models; false means bring your own key. */
  readonly managedModels: boolean;
  /** The customer's available balance, read in the admission's transaction (only when asked: `withAvailable`). */
  readonly available?: bigint;
}

export interface AdmitRunInput {
  readonly customerId: string;
  /** The conversation (Flowise chatId / sessionId, or any stable id); with the customer it names the session. */
  readonly conversationId: string;
  readonly at?: Date;
  /** Also read the available balance (a guard's funds check), in the same round trip as the budget. */
  readonly withAvailable?: boolean;
}

export interface AdmissionGate {
  /** Records activity and admits the run, or throws QuotaExceededError / BudgetExceededError / SubscriptionInactive. */
  admitRun(input: AdmitRunInput): Promise<RunAdmission>;
}
