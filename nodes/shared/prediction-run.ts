/**
 * The run of one prediction, as the metered variants (chat models and tools)
 * open it: the billing form they share (ledger, customer, admission, refusal
 * messages), the Billing Ledger credential picked in an options input (the
 * node's own `credential` is the provider's), and the run key every node of one
 * prediction shares.
 */
import { type Billable, flowRunKey, openedFlowRun, openFlowRun, type Refusal, type RefusalTemplates, sharedRead, ValidationError, z } from '../../src/plugin';
import { admissionInputs, refusalMessageInputs, refusalMessages, refusalMessageSchema } from './admission';
import { customerFor } from './customer';
import { credentialIdOf, flowise, type ICommonObject, type INodeData, type INodeParams, type Logger } from './flowise';
import { billableSchema, booleanSchema, customerInputs, customerSchema, type LedgerCredential, ledgerCredential, ledgerCredentialOf, quantitySchema, usd } from './inputs';
import { analyticReadWith, credentialAndAnalytic, keepAnalyticWith } from './prediction-reads';
import { langfuseTarget } from './run-langfuse';

const LEDGER_INPUT = 'billingLedgerCredential';

/** The billing inputs a variant adds after the provider's own (advanced ones under "Additional Parameters"). */
export function runInputs(): INodeParams[] {
  return [
    {
      label: 'Billing Ledger',
      name: LEDGER_INPUT,
      type: 'asyncOptions',
      loadMethod: 'listBillingLedgers',
      description: 'The Billing Ledger credential: where charges go and the billing-token secret',
    },
    ...customerInputs(),
    ...admissionInputs()
      .filter((p) => p.name !== 'minimumBalanceUsd')
      .map((p) => ({ ...p, additionalParams: true, description: p.name === 'runFee' ? 'Charged once per prediction, reserved with its first paid call (shared by every metered node of the prediction)' : p.description })),
    {
      label: 'Run Budget (USD)',
      name: 'runBudgetUsd',
      type: 'string',
      optional: true,
      additionalParams: true,
      description: 'Reserved for the whole prediction at admission (with the run fee). Empty: the first call’s maximum cost.',
    },
    ...refusalMessageInputs().map((p) => ({ ...p, additionalParams: true })),
  ];
}

export const runSchema = {
  [LEDGER_INPUT]: z.preprocess((v) => (v === '' || v == null ? undefined : v), z.string().trim().max(200).optional()),
  ...customerSchema,
  runFee: billableSchema('PrivateFlowRun', true),
  runFeeQuantity: quantitySchema,
  runBudgetUsd: usd('Run Budget'),
  checkSessions: booleanSchema(true),
  ...refusalMessageSchema,
};
type RunInputs = z.output<z.ZodObject<typeof runSchema>>;

/** Lists the Billing Ledger credentials (names and ids only) for the variant's options input. */
export async function listBillingLedgers(_nodeData: unknown, options: ICommonObject): Promise<Array<{ label: string; name: string }>> {
  const entity = options?.databaseEntities?.Credential;
  if (!options?.appDataSource || !entity) return [];
  const rows = await options.appDataSource.getRepository(entity).find({ where: { credentialName: 'billingLedger' } });
  return (rows as Array<{ id: string; name: string }>).map((r) => ({ label: r.name, name: r.id }));
}

/** The credential picked in the variant's "Billing Ledger" input, read as a guard's is (sharedLedgerCredential). */
function ledgerCredentialById(label: string, id: string | undefined, options: ICommonObject, input: string): Promise<LedgerCredential> {
  if (!id) return Promise.reject(new ValidationError(`${label}: select a Billing Ledger credential (input "Billing Ledger")`, { field: LEDGER_INPUT }));
  return sharedLedgerCredential({ label }, id, options, input);
}

/**
 * The run key of this prediction, the same in every node of it: Agentflow
 * nodes get Flowise's message id; chatflow nodes do not, so the key there
 * derives from what a retry keeps (flow, conversation, history, question).
 */
export function predictionRunKey(options: ICommonObject, input: string): string {
  const history = options.pastChatHistory ?? options.chatHistory;
  return flowRunKey({
    chatflowId: String(options.chatflowid ?? options.chatflowId ?? 'flow'),
    chatId: String(options.chatId ?? options.sessionId ?? 'chat'),
    apiMessageId: typeof options.apiMessageId === 'string' && options.apiMessageId ? options.apiMessageId : undefined,
    question: input,
    historyLength: Array.isArray(history) ? history.length : 0,
  });
}

export type FlowRun = Awaited<ReturnType<typeof openFlowRun>>;

/** A read serves the nodes of one prediction, which Flowise initialises one after another within moments. */
const CREDENTIAL_SHARE_MS = 5_000;

/** The node's own Billing Ledger credential (a Quota Guard's, a Metered Chat Model's), read as sharedLedgerCredential does. */
export function predictionCredential(node: { label: string }, nodeData: INodeData, options: ICommonObject, input: string): Promise<LedgerCredential> {
  const id = credentialIdOf(nodeData);
  if (!id) return ledgerCredential(node, nodeData, options);
  return sharedLedgerCredential(node, id, options, input);
}

/**
 * The Billing Ledger credential `id`, read once per prediction: a Quota Guard
 * and its Metered Chat Model name the same credential, and each read is a query
 * on Flowise's database plus a decryption. Shared only by nodes of one
 * prediction (same run key) and for seconds, so an edited or deleted credential
 * applies from the next prediction on; a failed read is not kept. Its secret
 * is never logged.
 */
function sharedLedgerCredential(node: { label: string }, id: string, options: ICommonObject, input: string): Promise<LedgerCredential> {
  // Shared through the plugin module: node files are bundled one by one (see sharedRead).
  return sharedRead('ledgerCredential', `${id}\u0000${predictionRunKey(options, input)}`, CREDENTIAL_SHARE_MS, () => readPredictionCredential(node, id, options));
}

/**
 * The credential with the chatflow's analytics settings in one statement where
 * Flowise allows it (the run's Langfuse target then needs no read); apart, the
 * two are two statements and two transactions on Flowise's database for every
 * prediction. Elsewhere, the credential's row alone.
 */
async function readPredictionCredential(node: { label: string }, id: string, options: ICommonObject): Promise<LedgerCredential> {
  const joint = await credentialAndAnalytic(id, options);
  if (!joint) return ledgerCredentialOf(node, await flowise.getCredentialData(id, options));
  const credential = ledgerCredentialOf(node, joint.data);
  keepAnalyticWith(credential, joint.analytic);
  return credential;
}

/**
 * Resolves the ledger and the customer now (a bad form fails the node at
 * once), and returns a function that opens the prediction's run at the first
 * call: every metered node of the prediction gets the same run (same key).
 */
export async function predictionRun(
  node: { label: string; name: string },
  i: RunInputs,
  nodeData: INodeData,
  options: ICommonObject,
  input: string,
  logger: Logger,
  extra: { maxOutputTokensCap?: number } = {},
): Promise<() => Promise<FlowRun>> {
  const cred = await ledgerCredentialById(node.label, i[LEDGER_INPUT], options, input);
  const messages = refusalMessages(i);
  const who = customerFor(i, cred, nodeData, options, logger, messages);
  let run: Promise<FlowRun> | undefined;
  return () =>
    (run ??= openPredictionRun(node, cred, who, nodeData, options, input, logger, {
      runFee: i.runFee === 'none' ? null : { item: i.runFee, quantity: i.runFeeQuantity ?? '1' },
      runBudgetUsd: i.runBudgetUsd,
      checkSessions: i.checkSessions,
      messages,
      ...extra,
    }));
}

/** How a node would open the prediction's run; only the first node to open it sets these (the others join it). */
export interface RunSettings {
  readonly runFee: { item: Billable; quantity: string } | null;
  readonly runBudgetUsd?: string;
  readonly checkSessions: boolean;
  readonly messages?: RefusalTemplates;
  readonly maxOutputTokensCap?: number;
  readonly metadata?: Record<string, unknown>;
}

/**
 * Opens (or joins) the run of this prediction: every billing node of one
 * prediction (guards, metered models and tools, Charge) passes the same key,
 * so they share one reservation, one fee and one refusal.
 */
export async function openPredictionRun(
  node: { name: string },
  cred: LedgerCredential,
  who: { customerId: string } | { refusal: Refusal },
  nodeData: INodeData,
  options: ICommonObject,
  input: string,
  logger: Logger,
  s: RunSettings,
): Promise<FlowRun> {
  const identity = 'refusal' in who ? { refusal: who.refusal } : { customerId: who.customerId };
  const runKey = predictionRunKey(options, input);
  // A later node of the prediction joins the run as it is (the first node's settings win anyway).
  const opened = openedFlowRun({ ledgerDatabase: cred.ledgerDatabase, ...identity, runKey });
  if (opened) return opened;
  return openFlowRun({
    ledgerDatabase: cred.ledgerDatabase,
    ...identity,
    conversationId: String(options.chatId ?? options.sessionId ?? nodeData.id),
    runKey,
    actor: `node:${node.name}`,
    runFee: s.runFee,
    runBudgetUsd: s.runBudgetUsd,
    maxOutputTokensCap: s.maxOutputTokensCap,
    checkSessions: s.checkSessions,
    messages: s.messages,
    metadata: s.metadata,
    logger,
    ...(await langfuseTarget(options, analyticReadWith(cred))),
  });
}
