import { ValidationError } from '../../src/plugin';
import { credentialInputs, type INode, type INodeData } from './flowise';

/**
 * Bring your own key: the customer's own provider key arrives in an override
 * variable the flow allows (default `customerApiKey`). It replaces the
 * operator's key for this prediction only (Flowise's credential helper prefers
 * a node input of the key's name over the stored credential), and it is
 * deleted from the prediction's variables at once, so Flowise neither passes it
 * to later nodes nor stores it with the execution. It is never logged.
 */
export const CUSTOMER_KEY_VARIABLE = 'customerApiKey';
const VARIABLE_NAME = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

export interface CustomerKey {
  /** The provider input the key goes into (e.g. openAIApiKey). */
  readonly param: string;
  readonly value: string;
}

/** Takes the customer's key out of the variables; null when the caller sent none. */
export function customerKeyFor(node: INode, nodeData: INodeData, variable: string | undefined): CustomerKey | null {
  const name = (variable ?? '').trim() || CUSTOMER_KEY_VARIABLE;
  if (!VARIABLE_NAME.test(name)) throw new ValidationError(`${node.label}: Customer Key Variable "${name}" is not a valid variable name`, { field: 'customerKeyVariable' });
  const vars = nodeData.inputs?.vars;
  if (!vars || typeof vars !== 'object' || Array.isArray(vars)) return null;
  const raw = (vars as Record<string, unknown>)[name];
  delete (vars as Record<string, unknown>)[name];
  if (typeof raw !== 'string' || !raw.trim()) return null;
  const param = keyParamOf(node);
  if (!param) throw new ValidationError(`${node.label}: this model's credential has no key field, so it cannot take the customer's own key`, { field: 'customerKeyVariable' });
  return { param, value: raw.trim() };
}

/** The provider's secret key field: the first password input of the node's credential type. */
export function keyParamOf(node: INode): string | undefined {
  for (const credName of node.credential?.credentialNames ?? []) {
    const field = credentialInputs(credName).find((i) => i.type === 'password');
    if (field) return field.name;
  }
  return undefined;
}
