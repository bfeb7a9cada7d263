import { randomUUID } from 'node:crypto';
import { admitFlowRun, flowRunKey } from '../../src/plugin';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, ledgerCredential, parseInputs } from '../shared/inputs';
import { identityOf } from '../shared/customer';
import { admissionInputs, admissionSchema, refusalMessageInputs, refusalMessages, refusalMessageSchema } from '../shared/admission';

/**
 * Quota Guard: an input-moderation node for chains and agents. Before the
 * chain runs it resolves the customer, checks the minimum balance, admits the
 * session against the plan's quota and budget, and charges the per-run fee
 * once per prediction. A refusal is thrown as the operator's message, which
 * Flowise returns as the answer.
 */
class QuotaGuard implements INode {
  label = 'Quota Guard';
  name = 'quotaGuard';
  version = 1.0;
  type = 'Moderation';
  icon = 'quotaguard.svg';
  category = 'Billing';
  description = 'Checks the customer’s session quota, budget and balance before the chain runs and charges the per-run fee; refuses with your message';
  baseClasses = ['Moderation'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [...customerInputs(), ...admissionInputs(), ...refusalMessageInputs()];

  async init(nodeData: INodeData, _input: string, options: ICommonObject = {}): Promise<{ checkForViolations(input: string): Promise<string> }> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await ledgerCredential(this, nodeData, options);
    const logger = loggerOf(options);
    // init runs once per prediction: outside queue mode this id names it (nothing re-runs a prediction there).
    const predictionId = randomUUID();
    return {
      checkForViolations: async (input: string) => {
        // In queue mode the fee's key derives from what a BullMQ retry on another worker keeps (flow,
        // conversation, history, question), so a retried prediction pays its fee once.
        const runKey = flowRunKey({
          chatflowId: String(options.chatflowid ?? 'flow'),
          chatId: String(options.chatId ?? options.sessionId ?? 'chat'),
          question: input,
          historyLength: Array.isArray(options.chatHistory) ? options.chatHistory.length : 0,
          predictionId,
          nodeId: nodeData.id,
        });
        const outcome = await admitFlowRun({
          ledgerDatabase: cred.ledgerDatabase,
          identity: identityOf(i, cred, nodeData, options),
          conversationId: String(options.chatId ?? options.sessionId ?? runKey),
          runKey,
          runFee: i.runFee === 'none' ? null : { item: i.runFee, quantity: i.runFeeQuantity ?? '1' },
          minimumBalanceUsd: i.minimumBalanceUsd,
          checkSessions: i.checkSessions,
          actor: `node:${this.name}`,
          messages: refusalMessages(i),
          logger,
          metadata: { chatflowId: options.chatflowid, chatId: options.chatId, nodeId: nodeData.id },
        });
        if (!outcome.ok) throw new Error(outcome.refusal.message);
        return input;
      },
    };
  }
}

const inputSchema = {
  ...customerSchema,
  ...admissionSchema,
  ...refusalMessageSchema,
};

export const nodeClass = QuotaGuard;
