import { createHash } from 'node:crypto';

/**
 * The idempotency key of a Flowise prediction's run (its reservation and fee),
 * derived from what a retry keeps, never from randomUUID():
 *  - a queue job id when the caller has one (BullMQ re-runs a job under the same id);
 *  - otherwise, in queue mode, the flow, the conversation, how many messages it
 *    already had and the question: BullMQ re-runs a killed worker's job on another
 *    worker with a NEW apiMessageId, but the same chatId, question and saved history;
 *  - otherwise Flowise's apiMessageId (unique per prediction; nothing re-runs it).
 * A node id is appended when a key must differ per node (a second guard, a loop).
 */
export interface FlowRunKeyInput {
  readonly chatflowId: string;
  readonly chatId: string;
  readonly apiMessageId?: string;
  readonly question?: string;
  /** Messages the conversation had before this prediction. */
  readonly historyLength?: number;
  readonly jobId?: string;
  /**
   * Outside queue mode, any id unique to this prediction that every node of it
   * sees (e.g. one kept per prediction-scoped object): used when there is no
   * apiMessageId, so concurrent identical questions in one conversation stay apart.
   */
  readonly predictionId?: string;
  readonly nodeId?: string;
  /** Default: `process.env.MODE === 'queue'` (Flowise's queue mode, where jobs are retried). */
  readonly queueMode?: boolean;
}

const clean = (s: string) => s.replace(/[\u0000-\u001f\u007f]/g, '').slice(0, 64);

/** Digests of recent questions: every node of a prediction derives the same key (several times each). */
const digests = new Map<string, string>();
function questionDigest(question: string): string {
  let d = digests.get(question);
  if (d === undefined) {
    d = createHash('sha256').update(question).digest('hex').slice(0, 24);
    if (question.length > 4096) return d;
    if (digests.size >= 512) digests.clear();
    digests.set(question, d);
  }
  return d;
}

export function flowRunKey(i: FlowRunKeyInput): string {
  const queue = i.queueMode ?? process.env.MODE === 'queue';
  const flow = `${clean(i.chatflowId)}:${clean(i.chatId)}`;
  let id: string;
  if (i.jobId) id = `job:${clean(i.jobId)}`;
  else if (!queue && i.apiMessageId) id = `msg:${clean(i.apiMessageId)}`;
  else if (!queue && i.predictionId) id = `pred:${clean(i.predictionId)}`;
  else {
    const q = questionDigest(i.question ?? '');
    id = `turn:${i.historyLength ?? 0}:${q}`;
  }
  return `flow:${flow}:${id}${i.nodeId ? `:${clean(i.nodeId)}` : ''}`;
}
