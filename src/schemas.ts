import { z } from 'zod';
import { ValidationError } from './errors';

/**
 * The closed input vocabulary every module validates with, so a customer id or
 * a decimal means the same thing at the CLI, the API, the nodes and the ledger.
 */

/** 1–128 characters: letters, digits and . _ : @ + - (starting with a letter or digit). */
export const CUSTOMER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$/;

export const customerIdSchema = z
  .string()
  .regex(CUSTOMER_ID_PATTERN, 'customer id must be 1–128 characters: letters, digits and . _ : @ + - (starting with a letter or digit)');

/**
 * Text that reaches tables, CSV rows and log lines (keys, ids, names): a newline or an escape in it would
 * break the CLI's output and forge log lines, so control characters are refused.
 */
// eslint-disable-next-line no-control-regex
export const NO_CONTROL_CHARACTERS = /^[^\u0000-\u001f\u007f]+$/;

/** An idempotency key, as the ledger and the CLI take it. */
export const idempotencyKeySchema = z
  .string()
  .min(1, 'idempotency key must not be empty')
  .max(255, 'idempotency key must be at most 255 characters')
  .regex(NO_CONTROL_CHARACTERS, 'idempotency key must not contain control characters');

/** A customer's display name. */
export const customerNameSchema = z
  .string()
  .min(1, 'name must not be empty')
  .max(200, 'name must be at most 200 characters')
  .regex(NO_CONTROL_CHARACTERS, 'name must not contain control characters (newlines, tabs, escapes)');

/** A non-negative decimal with at most 9 decimals (nano precision). */
export const DECIMAL_PATTERN = /^\d+(\.\d{1,9})?$/;

/** A non-negative decimal string with at most 9 decimals (nano precision); `what` names the field in the message. */
export const decimalSchema = (what: string, example = '0.01') =>
  z.string().regex(DECIMAL_PATTERN, `${what} must be a non-negative decimal string with at most 9 decimals, e.g. "${example}"`);

/**
 * Runs one of the engine's exact parsers (money.ts's parseUsd and parseQuantity, the CLI's integer and time
 * rules) inside zod, so a field is decided by the same code the ledger runs and not by a second, looser rule.
 * The parser's result is returned: `.transform(parsedBy(p))` makes it the field's value, `.superRefine(parsedBy(p))`
 * only checks and keeps the value as given. Its ValidationError becomes an issue on the field, with the parser's
 * message or `message` in its place (a Flowise form must not echo what was typed: it may be a misplaced secret).
 * Anything else it throws is a bug in the parser, not bad input, and is not dressed up as one.
 */
export function parsedBy<I, T>(parse: (value: I) => T, message?: string): (value: I, ctx: z.RefinementCtx) => T {
  return (value, ctx) => {
    try {
      return parse(value);
    } catch (e) {
      if (!(e instanceof ValidationError)) throw e;
      ctx.addIssue({ code: z.ZodIssueCode.custom, message: message ?? e.message });
      return z.NEVER;
    }
  };
}
