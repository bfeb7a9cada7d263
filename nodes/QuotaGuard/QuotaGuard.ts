import { recordUnauthorizedRun } from '../../src/plugin';
import { type ICommonObject, type INode, type INodeData, type INodeParams, loggerOf } from '../shared/flowise';
import { customerInputs, customerSchema, LEDGER_CREDENTIAL, parseInputs } from '../shared/inputs';
import { customerFor } from '../shared/customer';
import { openPredictionRun, predictionCredential, predictionRunKey } from '../shared/prediction-run';
import { admissionInputs, admissionSchema, refusalMessageInputs, refusalMessages, refusalMessageSchema } from '../shared/admission';

/**
 * Quota Guard: an input-moderation node for chains and agents. Before the
 * chain runs it resolves the customer, admits the session against the plan's
 * quota and budget and checks that the run fee plus the minimum is available,
 * without charging: the prediction's metered model takes the fee with its
 * first call's reservation (nothing is charged if that cannot be held). A
 * refusal is thrown as the operator's message, which Flowise returns as the
 * answer (moderation, HTTP 200).
 */
class QuotaGuard implements INode {
  label = 'Quota Guard';
  name = 'quotaGuard';
  version = 1.0;
  type = 'Moderation';
  icon = 'quotaguard.svg';
  category = 'Billing';
  description = 'Checks the customer’s session quota, budget and balance before the chain runs (the run fee is taken with the first metered model call); refuses with your message';
  baseClasses = ['Moderation'];
  credential: INodeParams = LEDGER_CREDENTIAL;
  inputs: INodeParams[] = [...customerInputs(), ...admissionInputs(), ...refusalMessageInputs()];

  async init(nodeData: INodeData, input: string, options: ICommonObject = {}): Promise<{ checkForViolations(input: string): Promise<string> }> {
    const i = parseInputs(this, inputSchema, nodeData.inputs);
    const cred = await predictionCredential(this, nodeData, options, input);
    const logger = loggerOf(options);
    const messages = refusalMessages(i);
    const who = customerFor(i, cred, nodeData, options, logger, messages);
    return {
      checkForViolations: async (text: string) => {
        // Joins the prediction's run (same key as its metered model): the guard only checks; the fee is
        // reserved together with the first call's maximum, so a first call that cannot be held costs nothing.
        const run = await openPredictionRun(this, cred, who, nodeData, options, input, logger, {
          runFee: i.runFee === 'none' ? null : { item: i.runFee, quantity: i.runFeeQuantity ?? '1' },
          checkSessions: i.checkSessions,
          messages,
        });
        const refusal = await run.precheck(i.minimumBalanceUsd ?? '0');
        if ('error' in who) await recordUnauthorizedRun({ ledgerDatabase: cred.ledgerDatabase, runKey: predictionRunKey(options, input), customerId: null, error: who.error });
        // A moderation "violation": Flowise answers with this text (HTTP 200) and the chain never runs.
        if (refusal) throw new Error(refusal.message);
        return text;
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
