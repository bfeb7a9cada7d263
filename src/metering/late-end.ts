import type { Ledger } from '../ledger/types';
import { cacheMetadata, priceTokens } from '../pricing/price';
import { usageOf } from './estimate';
import type { RunRecorder } from './run-report';
import type { ProvisionalCall } from './run-state';

/**
 * The late end of a call the call sweep charged its prompt estimate (CallWatch.unanswered):
 * the difference to its actual usage is charged directly, from what is available (its cover is long gone;
 * refused with INSUFFICIENT_FUNDS when that no longer covers it), or the excess is refunded from that
 * charge. `key` makes a replay move nothing. Throws the ledger's error (the handler reports it).
 */
export async function settleLateEnd(
  ledger: Ledger,
  who: { readonly customerId: string; readonly actor: string },
  recorder: RunRecorder,
  p: ProvisionalCall,
  runId: string,
  output: unknown,
  key: string,
): Promise<void> {
  const card = p.root.card;
  if (!card) return;
  const usage = usageOf(output, p.promptEstimate);
  const q = priceTokens(card, p.model, usage.inputTokens, usage.outputTokens, usage);
  const diff = q.amount - p.charge.amount;
  if (diff > 0n) {
    const c = await ledger.charge({
      customerId: who.customerId, amount: diff, idempotencyKey: key, actor: who.actor, chargeType: q.item, quantity: q.quantity, rateCardVersion: card.version,
      metadata: recorder.chargeMetadata(p.root, runId, {
        kind: 'llm', model: p.model ?? null, inputTokens: usage.inputTokens, outputTokens: usage.outputTokens, ...cacheMetadata(q), usageSource: usage.source,
        note: 'late end: the rest of a call charged its prompt estimate', provisionalChargeId: p.charge.id,
      }),
    });
    recorder.recorded(p.root, runId, 'llm', c, { name: `billing:${q.item}`, observationId: `billing-${c.id}`, parent: runId, model: p.model, startTime: p.startTime });
  } else if (diff < 0n) {
    await ledger.refund({ chargeId: p.charge.id, amount: -diff, idempotencyKey: key, actor: who.actor, reason: 'late end: a call charged its prompt estimate used less' });
    recorder.refunded(p.root, runId, p.charge, -diff, q.item);
  }
}
