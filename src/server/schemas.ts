import { z } from 'zod';
import { ValidationError } from '../errors';
import { type Nanos, parseQuantity, parseUsd } from '../money';
import { customerIdSchema, NO_CONTROL_CHARACTERS, parsedBy } from '../schemas';

/**
 * The API's input vocabulary. Money is a USD decimal string (never a JSON
 * number, which would be a float); the exact parser in money.ts decides.
 */
export const customerId = customerIdSchema;

export const entityId = z.string().regex(/^[A-Za-z0-9_-]{1,100}$/, 'ids look like "chg_…": letters, digits, "_" and "-"');

/** No amount or quantity is longer; the bound is checked before the exact parser runs. */
const decimal = () => z.string().max(40);

/** "12.50", "$0.000025": at most 9 decimals, no exponent, no sign. */
export const usd = (field: string) => decimal().transform(parsedBy((s): Nanos => parseUsd(s, { field })));
export const positiveUsd = (field: string) =>
  decimal().transform(
    parsedBy((s): Nanos => {
      const n = parseUsd(s, { field });
      if (n <= 0n) throw new ValidationError(`${field} must be greater than zero`);
      return n;
    }),
  );
/** Checked by the pricing's own parser and kept as written: the rate card prices it. */
export const quantity = decimal().superRefine(parsedBy((s: string) => parseQuantity(s)));

/** Every mutation names itself with this header; see README "Idempotency". */
export const idempotencyHeaders = z.object({
  'idempotency-key': z
    .string({ required_error: 'the Idempotency-Key header is required on every mutation' })
    .min(1)
    .max(200)
    .regex(NO_CONTROL_CHARACTERS, 'Idempotency-Key must not contain control characters'),
});

/**
 * A whole number in a query string, in plain digits as the CLI takes it: z.coerce.number would also take
 * "1e2", "0x10", " 5" and "" (as 0).
 */
export const queryInt = (min: number, max: number = Number.MAX_SAFE_INTEGER) =>
  z.preprocess(
    (v) => (typeof v === 'string' && /^\d{1,16}$/.test(v) ? Number(v) : v),
    z.number({ invalid_type_error: 'must be a whole number written in digits, e.g. 50' }).int().min(min).max(max),
  );

export const page = z.object({
  limit: queryInt(1, 500).default(50),
});

export const customerParams = z.object({ customerId });
