import { z } from 'zod';

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
 * A customer's display name. Control characters are refused: a newline or an escape in a name would
 * break the CLI's tables and CSV rows and forge lines in logs (idempotency keys refuse them too).
 */
export const customerNameSchema = z
  .string()
  .min(1, 'name must not be empty')
  .max(200, 'name must be at most 200 characters')
  // eslint-disable-next-line no-control-regex
  .regex(/^[^\u0000-\u001f\u007f]+$/, 'name must not contain control characters (newlines, tabs, escapes)');

/** A non-negative decimal with at most 9 decimals (nano precision). */
export const DECIMAL_PATTERN = /^\d+(\.\d{1,9})?$/;

/** A non-negative decimal string with at most 9 decimals (nano precision); `what` names the field in the message. */
export const decimalSchema = (what: string, example = '0.01') =>
  z.string().regex(DECIMAL_PATTERN, `${what} must be a non-negative decimal string with at most 9 decimals, e.g. "${example}"`);
