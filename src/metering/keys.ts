/**
 * Idempotency keys of the metering handler. They derive only from where a
 * movement comes from: the LangChain run id (a UUID LangChain assigns, or the
 * caller's `runId` in the config), the external message id when one is given,
 * and the step. A retried or replayed callback produces the same key, so the
 * ledger returns the first result instead of moving money again.
 *
 *   lc:[<messageId>:]<runId>:<step>   step ∈ hold | settle | release | late | alive:<n> (a step), and for the root run
 *                                     reserve | fee | compute | end (see run-ledger.ts)
 *   <step key>:renew                  a new reservation taken by this step after the run's lapsed (run-ledger.ts)
 *   <key>:lapsed                      a step's settle, or the fee or compute, charged directly after its cover lapsed
 *   <runKey>:<step>                   run-level steps when the caller gives a retry-stable `runKey`
 *                                     (e.g. flowRunKey() of a Flowise prediction or a queue job id)
 */
/** `late`: the late end of a call charged its prompt estimate (CallWatch.lateEnd). `alive:<n>`: the n-th keep-alive of a run's reservation while this call was in flight (see CallWatch.sweep). */
export type StepKey = 'hold' | 'settle' | 'release' | 'late' | `alive:${number}`;
export type RunStepKey = 'reserve' | 'fee' | 'compute' | 'end';
export type KeyStep = StepKey | RunStepKey;

export function meteringKey(runId: string, step: KeyStep, messageId?: string): string {
  return messageId ? `lc:${messageId}:${runId}:${step}` : `lc:${runId}:${step}`;
}
