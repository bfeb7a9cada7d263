/**
 * Idempotency keys of the metering handler. They derive only from where a
 * movement comes from: the LangChain run id (a UUID LangChain assigns, or the
 * caller's `runId` in the config), the external message id when one is given,
 * and the step. A retried or replayed callback produces the same key, so the
 * ledger returns the first result instead of moving money again.
 *
 *   lc:[<messageId>:]<runId>:<step>      step ∈ hold | settle | release, and for the root run fee-hold | fee | fee-release | compute-hold | compute | compute-release
 */
export type KeyStep = 'hold' | 'settle' | 'release' | 'fee-hold' | 'fee' | 'fee-release' | 'compute-hold' | 'compute' | 'compute-release';

export function meteringKey(runId: string, step: KeyStep, messageId?: string): string {
  return messageId ? `lc:${messageId}:${runId}:${step}` : `lc:${runId}:${step}`;
}
