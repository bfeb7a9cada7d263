/**
 * Node inputs: the shared form fields of every billing node, and parsing with
 * zod so that a bad value is named ("Quota Guard: Minimum Balance (USD)
 * (minimumBalanceUsd): …") instead of surfacing later as a vague failure.
 */
import {
  type Billable,
  BILLABLES,
  CUSTOMER_SOURCES,
  customerIdSchema,
  DEFAULT_RAW_ID_VARIABLE,
  DEFAULT_TOKEN_VARIABLE,
  DECIMAL_PATTERN,
  DEFAULT_REFUSAL_MESSAGES,
  formatUsd,
  ledgerTarget,
  MAX_AMOUNT,
  parsedBy,
  parseUsd,
  ValidationError,
  VARIABLE_NAME,
  z,
} from '../../src/plugin';
import { credentialIdOf, flowise, type ICommonObject, type INodeData, type INodeParams } from './flowise';

export const LEDGER_CREDENTIAL: INodeParams = {
  label: 'Billing Ledger',
  name: 'credential',
  type: 'credential',
  credentialNames: ['billingLedger'],
};

const SOURCE_LABELS: Record<(typeof CUSTOMER_SOURCES)[number], { label: string; description: string }> = {
  billingToken: { label: 'Signed billing token', description: 'A JWT signed with the Billing Ledger secret, sent in an override variable' },
  workspace: { label: 'Flowise workspace', description: "The customer is the flow's Flowise workspace id" },
  organization: { label: 'Flowise organization', description: "The customer is the flow's Flowise organization id" },
  fixed: { label: 'Fixed customer', description: 'Every run of this flow bills one customer id set here' },
  insecureRawId: { label: 'Unsigned id variable (INSECURE)', description: 'Testing only: any caller can name any customer; logs a warning' },
};

/** How many output tokens a metered call holds when it sets no max tokens itself (chatflow node and variants). */
export const MAX_OUTPUT_TOKENS_INPUT: INodeParams = {
  label: 'Max Output Tokens Held',
  name: 'maxOutputTokensCap',
  type: 'number',
  default: 4096,
  optional: true,
  additionalParams: true,
  description: 'Output tokens reserved for a call that sets no max tokens',
};

/** The metered chat model's and tool's own refusal answer: only for a customer that cannot be identified. */
export const UNAUTHORIZED_MESSAGE_INPUT: INodeParams = {
  label: 'Unauthorized Message',
  name: 'refusalMessage',
  type: 'string',
  rows: 2,
  default: DEFAULT_REFUSAL_MESSAGES.unauthorized,
  optional: true,
  additionalParams: true,
  description: 'Answer when the customer cannot be identified (no valid billing token, unknown customer). Other refusals use the messages of the Quota Guard before it, else the defaults.',
};

/** Max Output Tokens Held: blank means the default; otherwise a whole number from 1 to 10,000,000. */
const CAP_MESSAGE = 'must be a whole number from 1 to 10000000';
export const maxOutputTokensSchema = z.preprocess(
  (v) => (v == null || (typeof v === 'string' && v.trim() === '') ? 4096 : typeof v === 'string' ? Number(v.trim()) : v),
  z.number({ invalid_type_error: CAP_MESSAGE }).int(CAP_MESSAGE).min(1, CAP_MESSAGE).max(10_000_000, CAP_MESSAGE),
);

/** The customer-identity fields, shared by every node. */
export function customerInputs(): INodeParams[] {
  return [
    {
      label: 'Customer Source',
      name: 'customerSource',
      type: 'options',
      options: CUSTOMER_SOURCES.map((s) => ({ name: s, ...SOURCE_LABELS[s] })),
      default: 'billingToken',
      description: 'Who pays. Request fields (chatId, sessionId, vars) never name the customer by themselves.',
    },
    {
      label: 'Billing Token Variable',
      name: 'tokenVariable',
      type: 'string',
      default: DEFAULT_TOKEN_VARIABLE,
      optional: true,
      additionalParams: true,
      description: 'Override variable carrying the billing token (enable it under the flow\'s API → Override Config → Variables).',
    },
    {
      label: 'Fixed Customer ID',
      name: 'fixedCustomerId',
      type: 'string',
      optional: true,
      placeholder: 'cust_123',
      description: 'Used when Customer Source is "Fixed customer".',
    },
    {
      label: 'Unsigned ID Variable',
      name: 'rawIdVariable',
      type: 'string',
      default: DEFAULT_RAW_ID_VARIABLE,
      optional: true,
      additionalParams: true,
      description: 'Used only with the INSECURE source.',
    },
  ];
}

const blankToUndefined = (v: unknown) => (v === '' || v === null ? undefined : v);
const optionalString = z.preprocess((v) => (typeof v === 'string' && v.trim() === '' ? undefined : blankToUndefined(v)), z.string().trim().max(500).optional());
export const usd = (what: string) =>
  z.preprocess(
    (v) => (typeof v === 'number' ? String(v) : blankToUndefined(v)),
    z
      .string()
      .trim()
      .regex(DECIMAL_PATTERN, `${what} must be a non-negative amount in USD, e.g. "0.01"`)
      // The ledger's largest amount: above it every run was refused as "unavailable". Checked only once the pattern
      // holds (one issue per value); the message never repeats the value, as parseUsd's own would.
      .superRefine((v, ctx) => {
        if (DECIMAL_PATTERN.test(v)) parsedBy((s: string) => parseUsd(s), `${what} must be at most $${formatUsd(MAX_AMOUNT)}`)(v, ctx);
      })
      .optional(),
  );

/** A ChargeType or resource; `withNone` adds "none". Blank means `fallback`. */
export function billableSchema<N extends boolean>(fallback: string, withNone: N): z.ZodType<N extends true ? Billable | 'none' : Billable, z.ZodTypeDef, unknown> {
  const values = (withNone ? ['none', ...BILLABLES] : [...BILLABLES]) as [string, ...string[]];
  return z.preprocess((v) => (v === '' || v == null ? fallback : v), z.enum(values, { message: `must be one of ${values.join(', ')}` })) as never;
}

/** A non-negative decimal quantity (string or integer); blank means undefined. */
export const quantitySchema = z.preprocess(
  (v) => (v === '' || v == null ? undefined : typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim() : v),
  z.string().regex(DECIMAL_PATTERN, 'must be a non-negative number (up to 9 decimals)').optional(),
);

export const booleanSchema = (fallback: boolean) =>
  z.preprocess((v) => (v === '' || v == null ? fallback : v === 'false' ? false : v === 'true' ? true : v), z.boolean());

export const textSchema = z.preprocess((v) => (v === '' || v === null ? undefined : v), z.string().max(2000).optional());

export const customerSchema = {
  customerSource: z.preprocess(blankToUndefined, z.enum(CUSTOMER_SOURCES).default('billingToken')),
  tokenVariable: optionalString,
  fixedCustomerId: optionalString,
  rawIdVariable: optionalString,
};

/**
 * What one field cannot say: the identity field the chosen Customer Source uses must be usable (else every
 * run was refused as "unavailable"); the fields of the other sources are not looked at.
 */
function crossFieldIssues(data: Record<string, unknown>): Array<{ input: string; message: string }> {
  const variable = (input: string) => {
    const v = data[input];
    return typeof v === 'string' && !VARIABLE_NAME.test(v) ? [{ input, message: 'must be a variable name (a letter or _, then letters, digits, _; at most 64)' }] : [];
  };
  switch (data.customerSource) {
    case 'fixed': {
      if (data.fixedCustomerId === undefined) return [{ input: 'fixedCustomerId', message: 'is required when Customer Source is "Fixed customer"' }];
      // The rule's own wording, from where the rule is defined (the ledger refuses the same ids with it).
      const r = customerIdSchema.safeParse(data.fixedCustomerId);
      return r.success ? [] : [{ input: 'fixedCustomerId', message: r.error.issues[0]!.message }];
    }
    case 'billingToken':
      return variable('tokenVariable');
    case 'insecureRawId':
      return variable('rawIdVariable');
    default:
      return [];
  }
}

const compiledShapes = new WeakMap<z.ZodRawShape, { schema: z.ZodObject<z.ZodRawShape>; keys: string[]; parsed: Map<string, unknown> }>();

/**
 * Parses `nodeData.inputs` with `schema`; an error names the node, each bad
 * input's label and name, and never echoes its value (it might be a secret
 * someone pasted into the wrong field).
 */
export function parseInputs<S extends z.ZodRawShape>(node: { label: string; inputs?: INodeParams[] }, shape: S, inputs: ICommonObject | undefined): z.output<z.ZodObject<S>> {
  // Every prediction initialises the node with the same saved inputs: the schema is built once per shape and
  // a form already parsed is not parsed again (only the shape's own fields count; results are never mutated).
  let compiled = compiledShapes.get(shape);
  if (!compiled) compiledShapes.set(shape, (compiled = { schema: z.object(shape), keys: Object.keys(shape), parsed: new Map() }));
  const fields = compiled.keys.map((k) => inputs?.[k]);
  const memo = fields.every((v) => v === null || typeof v !== 'object') ? fields.map((v) => (v === undefined ? 'u' : `${typeof v}:${JSON.stringify(v)}`)).join('\u0001') : undefined;
  const seen = memo === undefined ? undefined : compiled.parsed.get(memo);
  if (seen) return seen as z.output<z.ZodObject<S>>;
  const r = compiled.schema.safeParse(inputs ?? {});
  const crossed = r.success ? crossFieldIssues(r.data) : [];
  if (r.success && crossed.length === 0) {
    if (memo !== undefined) {
      if (compiled.parsed.size >= 64) compiled.parsed.clear();
      compiled.parsed.set(memo, r.data);
    }
    return r.data as z.output<z.ZodObject<S>>;
  }
  const labelOf = (name: string) => node.inputs?.find((i) => i.name === name)?.label ?? name;
  const issues = (r.success ? crossed : r.error.issues.map((i) => ({ input: String(i.path[0] ?? '(inputs)'), message: i.message }))).map((i) => ({ ...i, label: labelOf(i.input) }));
  throw new ValidationError(`${node.label}: ${issues.map((i) => `input "${i.label}" (${i.input}): ${i.message}`).join('; ')}`, { issues });
}

export interface LedgerCredential {
  readonly ledgerDatabase?: string;
  readonly tokenSecret?: string;
}

/** Reads the Billing Ledger credential; its values are never logged or put in an error. */
export async function ledgerCredential(node: { label: string }, nodeData: INodeData, options: ICommonObject | undefined): Promise<LedgerCredential> {
  const id = credentialIdOf(nodeData);
  if (!id) throw new ValidationError(`${node.label}: select a Billing Ledger credential`, { field: 'credential' });
  return ledgerCredentialOf(node, await flowise.getCredentialData(id, options ?? {}));
}

/** The Billing Ledger credential in a credential's decrypted data (empty: it was not found). */
export function ledgerCredentialOf(node: { label: string }, data: ICommonObject | null | undefined): LedgerCredential {
  if (!data || Object.keys(data).length === 0) throw new ValidationError(`${node.label}: the selected Billing Ledger credential was not found`, { field: 'credential' });
  const str = (v: unknown) => (typeof v === 'string' && v.trim() ? v.trim() : undefined);
  const ledgerDatabase = str(data.ledgerDatabase);
  try {
    // A location the ledger would refuse (another scheme, a malformed URL) fails the node now; the reason never repeats the location.
    if (ledgerDatabase) ledgerTarget(ledgerDatabase);
  } catch (e) {
    throw new ValidationError(`${node.label}: the Billing Ledger credential's Ledger Database: ${(e as Error).message}`, { field: 'ledgerDatabase' });
  }
  return { ledgerDatabase, tokenSecret: str(data.billingTokenSecret) };
}

/** The override variables of this prediction (caller-controlled; only a signed token in them is trusted). */
export function varsOf(nodeData: INodeData): Record<string, unknown> {
  const v = nodeData.inputs?.vars;
  if (v && typeof v === 'object' && !Array.isArray(v)) return v as Record<string, unknown>;
  if (typeof v === 'string') {
    try {
      const parsed = JSON.parse(v);
      if (parsed && typeof parsed === 'object') return parsed as Record<string, unknown>;
    } catch {
      // not JSON: no variables
    }
  }
  return {};
}
