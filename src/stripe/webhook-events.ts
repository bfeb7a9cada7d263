import { z } from 'zod';
import { ValidationError } from '../errors';

/**
 * The shapes of the Stripe events the webhook acts on, checked after the
 * signature: a correctly signed but malformed event (`[1,2,3]`, `null`, no
 * `data`, `amount: 10.5`, …) is refused with a VALIDATION_ERROR before
 * anything is touched. Only the fields we read are checked; Stripe adds
 * fields freely, so everything else passes through.
 */

const id = z.string().min(1).max(255);
/** Stripe ids or expanded objects: `customer: "cus_…"` or `customer: { id: "cus_…", … }`. */
const ref = z.union([id, z.object({ id }).passthrough()]).nullable().optional();
const metadata = z.record(z.string(), z.string()).nullable().optional();
/** Amounts in the currency's minor unit: whole, non-negative, within Stripe's 8-digit limit with headroom. */
const minorUnits = z.number().int().nonnegative().max(1e12);

const envelope = z
  .object({
    id,
    type: z.string().min(1).max(255),
    data: z.object({ object: z.record(z.string(), z.unknown()) }).passthrough().optional(),
  })
  .passthrough();

const paymentIntent = z
  .object({
    id,
    amount: minorUnits,
    amount_received: minorUnits.optional(),
    customer: ref,
    metadata,
    last_payment_error: z.object({ code: z.string().nullable().optional(), message: z.string().nullable().optional() }).passthrough().nullable().optional(),
  })
  .passthrough();

const checkoutSession = z
  .object({
    id,
    mode: z.string(),
    payment_status: z.string(),
    amount_total: minorUnits.nullable(),
    customer: ref,
    client_reference_id: z.string().nullable().optional(),
    payment_intent: ref,
    metadata,
  })
  .passthrough();

const charge = z.object({ id, payment_intent: ref, amount_refunded: minorUnits }).passthrough();

const invoice = z.object({ id, customer: ref, metadata }).passthrough();

const subscription = z
  .object({
    id,
    customer: ref,
    status: z.string(),
    metadata,
    items: z.object({ data: z.array(z.object({ price: z.object({ lookup_key: z.string().nullable().optional() }).passthrough().nullable().optional() }).passthrough()) }).passthrough().optional(),
  })
  .passthrough();

/** The object schema per handled event type. */
const OBJECTS = {
  'payment_intent.succeeded': paymentIntent,
  'payment_intent.payment_failed': paymentIntent,
  'checkout.session.completed': checkoutSession,
  'checkout.session.async_payment_succeeded': checkoutSession,
  'charge.refunded': charge,
  'invoice.paid': invoice,
  'invoice.payment_failed': invoice,
  'customer.subscription.created': subscription,
  'customer.subscription.updated': subscription,
  'customer.subscription.deleted': subscription,
} as const;

export type HandledType = keyof typeof OBJECTS;
type ObjectOf<T extends HandledType> = z.infer<(typeof OBJECTS)[T]>;

/** A verified event: either one we handle, with its object checked, or another type (only id and type checked). */
export type WebhookEvent =
  | { [T in HandledType]: { readonly id: string; readonly type: T; readonly object: ObjectOf<T> } }[HandledType]
  | { readonly id: string; readonly type: string & {}; readonly object: null; readonly unhandled: true };

const isHandled = (type: string): type is HandledType => Object.prototype.hasOwnProperty.call(OBJECTS, type);

function invalid(error: z.ZodError, what: string, eventId?: string): ValidationError {
  const issues = error.issues.slice(0, 5).map((i) => ({ path: i.path.join('.'), message: i.message }));
  const where = issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join('; ');
  return new ValidationError(`Malformed Stripe event${eventId ? ` ${eventId}` : ''}: ${what} — ${where}`, { issues, ...(eventId ? { eventId } : {}) });
}

/** Checks a verified event's shape; throws VALIDATION_ERROR (never a crash) on anything else. */
export function parseWebhookEvent(raw: unknown): WebhookEvent {
  const env = envelope.safeParse(raw);
  if (!env.success) throw invalid(env.error, 'not an event object with an id, a type and data.object');
  const { id: eventId, type, data } = env.data;
  if (!isHandled(type)) return { id: eventId, type, object: null, unhandled: true };
  if (!data) throw new ValidationError(`Malformed Stripe event ${eventId}: ${type} has no data.object`, { eventId, issues: [{ path: 'data', message: 'Required' }] });
  const object = OBJECTS[type].safeParse(data.object);
  if (!object.success) throw invalid(object.error, `${type} data.object`, eventId);
  return { id: eventId, type, object: object.data } as WebhookEvent;
}
