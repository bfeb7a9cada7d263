import { BILLABLES, DEFAULT_REFUSAL_MESSAGES } from '../../src/plugin';
import type { INodeParams } from './flowise';
import { billableSchema, booleanSchema, quantitySchema, textSchema, usd } from './inputs';

/**
 * The admission form Quota Guard (chatflows) and Billing Gate (agentflows)
 * share: the run fee, the minimum balance, session counting, and the
 * operator's refusal messages.
 */
export function admissionInputs(): INodeParams[] {
  return [
    {
      label: 'Run Fee',
      name: 'runFee',
      type: 'options',
      options: [{ label: 'None', name: 'none' }, ...BILLABLES.map((b) => ({ label: b, name: b }))],
      default: 'PrivateFlowRun',
      description: 'Charged once per prediction, priced by the active rate card',
    },
    { label: 'Run Fee Quantity', name: 'runFeeQuantity', type: 'string', default: '1', optional: true, additionalParams: true },
    {
      label: 'Minimum Balance (USD)',
      name: 'minimumBalanceUsd',
      type: 'string',
      default: '0.01',
      optional: true,
      description: 'Refuse unless this much is available beyond the run fee (covers the first model call)',
    },
    { label: 'Count Sessions', name: 'checkSessions', type: 'boolean', default: true, optional: true, additionalParams: true },
  ];
}

export function refusalMessageInputs(): INodeParams[] {
  const message = (label: string, name: string, fallback: string, advanced: boolean): INodeParams => ({
    label, name, type: 'string', rows: 2, default: fallback, optional: true, ...(advanced ? { additionalParams: true } : {}),
  });
  return [
    message('Insufficient Funds Message', 'insufficientFundsMessage', DEFAULT_REFUSAL_MESSAGES.insufficientFunds, false),
    message('Quota Exceeded Message', 'quotaExceededMessage', DEFAULT_REFUSAL_MESSAGES.quotaExceeded, true),
    message('Budget Exceeded Message', 'budgetExceededMessage', DEFAULT_REFUSAL_MESSAGES.budgetExceeded, true),
    message('Unauthorized Message', 'unauthorizedMessage', DEFAULT_REFUSAL_MESSAGES.unauthorized, true),
    message('Unavailable Message', 'unavailableMessage', DEFAULT_REFUSAL_MESSAGES.unavailable, true),
    message('Own Key Required Message', 'byokRequiredMessage', DEFAULT_REFUSAL_MESSAGES.byokRequired, true),
  ];
}

export const admissionSchema = {
  runFee: billableSchema('PrivateFlowRun', true),
  runFeeQuantity: quantitySchema,
  minimumBalanceUsd: usd('Minimum Balance'),
  checkSessions: booleanSchema(true),
};

export const refusalMessageSchema = {
  insufficientFundsMessage: textSchema,
  quotaExceededMessage: textSchema,
  budgetExceededMessage: textSchema,
  unauthorizedMessage: textSchema,
  unavailableMessage: textSchema,
  byokRequiredMessage: textSchema,
};

/** The parsed messages in the shape the plugin's refusals take. */
export function refusalMessages(i: {
  insufficientFundsMessage?: string;
  quotaExceededMessage?: string;
  budgetExceededMessage?: string;
  unauthorizedMessage?: string;
  unavailableMessage?: string;
  byokRequiredMessage?: string;
}) {
  return {
    insufficientFunds: i.insufficientFundsMessage,
    quotaExceeded: i.quotaExceededMessage,
    budgetExceeded: i.budgetExceededMessage,
    unauthorized: i.unauthorizedMessage,
    unavailable: i.unavailableMessage,
    byokRequired: i.byokRequiredMessage,
  };
}
