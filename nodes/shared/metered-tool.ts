import { randomUUID } from 'node:crypto';
import type { Billable } from '../../src/plugin';
import type { RefusalLike } from './refusal-answer';

/**
 * Meters a LangChain tool instance: each call is paid before the tool runs
 * (`_call`, where every path of a tool ends: call, invoke, the Agent node's
 * loop) and settled after, released when the tool fails. A refused call does
 * not run and answers with the operator's message as the tool's output (a
 * throw would end the prediction as HTTP 500); the run is refused from then on,
 * so the model's next call answers the refusal too and the provider is not called.
 */
export interface ToolMeter {
  beforeTool(call: { callKey: string; item: Billable; quantity: string }): Promise<{ ok: true; ticket: unknown } | { ok: false; refusal: RefusalLike }>;
  afterTool(ticket: unknown): Promise<unknown>;
  failTool(ticket: unknown): Promise<unknown>;
}

export interface MeterToolOptions {
  readonly meter: () => Promise<ToolMeter>;
  readonly nodeKey: string;
  readonly price: { readonly item: Billable; readonly quantity: string };
}

const METERED = Symbol.for('flowise-billing.meteredTool');
type AnyFn = (...args: any[]) => any;

export function meterTool<T>(tool: T, opts: MeterToolOptions): T {
  const t = tool as unknown as { _call?: AnyFn; name?: string; [METERED]?: true };
  if (!t || typeof t !== 'object' || typeof t._call !== 'function' || t[METERED]) return tool;
  Object.defineProperty(t, METERED, { value: true, enumerable: false });
  const call = t._call;
  t._call = async function (this: unknown, arg: unknown, runManager?: { runId?: string }, ...rest: unknown[]) {
    const meter = await opts.meter();
    const h = await meter.beforeTool({ callKey: `${opts.nodeKey}:${t.name ?? 'tool'}:${runManager?.runId ?? randomUUID()}`, ...opts.price });
    if (!h.ok) return h.refusal.message;
    let out;
    try {
      out = await call.call(this, arg, runManager, ...rest);
    } catch (e) {
      await meter.failTool(h.ticket);
      throw e;
    }
    await meter.afterTool(h.ticket);
    return out;
  };
  return tool;
}
