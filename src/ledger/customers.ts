import { BillingError } from '../errors';
import type { Dialect, SqlConnection } from './dialect';
import { customerFromNameRow } from './rows';
import { writeAudit } from './within';
import type { Customer } from './types';

/**
 * Customer reads and the one customer write that is not money: the display
 * name. Kept out of the batch write path: a rename touches only `name`, which
 * the batch's customer upsert never writes, so a rename and a concurrent
 * money batch cannot overwrite each other.
 */

/**
 * One page of customers in id order (keyset paging): the `limit` customers
 * whose id sorts after `after`. Each page is one indexed range read, so a
 * customer created while an operator pages is never shown twice and never
 * shifts the pages (it appears on a later page when its id sorts after the
 * cursor).
 */
export async function customersPage(c: SqlConnection, opts: { limit: number; after: string | null }): Promise<Customer[]> {
  const rows = opts.after === null
    ? await c.query('SELECT id, name, created_at FROM billing_customers ORDER BY id LIMIT ?', [opts.limit])
    : await c.query('SELECT id, name, created_at FROM billing_customers WHERE id > ? ORDER BY id LIMIT ?', [opts.after, opts.limit]);
  return rows.map(customerFromNameRow);
}

export async function customerCount(c: SqlConnection): Promise<number> {
  const [r] = await c.query('SELECT COUNT(*) AS n FROM billing_customers');
  return Number(r?.n ?? 0);
}

/**
 * Sets (or with null clears) a customer's display name. Setting the name it
 * already has changes nothing and writes no audit record, so a retried rename
 * is a no-op.
 */
export async function renameCustomer(
  c: SqlConnection,
  d: Dialect,
  i: { id: string; name: string | null; actor: string; now: number },
): Promise<{ customer: Customer; changed: boolean }> {
  const [row] = await c.query(`SELECT id, name, created_at FROM billing_customers WHERE id = ? ${d.forUpdate}`, [i.id]);
  if (!row) throw new BillingError('CUSTOMER_NOT_FOUND', `Customer ${i.id} does not exist`, { customerId: i.id });
  const before = customerFromNameRow(row).name;
  const customer = { ...customerFromNameRow(row), name: i.name };
  if (before === i.name) return { customer, changed: false };
  await c.run('UPDATE billing_customers SET name = ?, updated_at = ? WHERE id = ?', [i.name, i.now, i.id]);
  await writeAudit(c, d, { at: i.now, actor: i.actor, operation: 'updateCustomer', customerId: i.id, details: { name: i.name, previousName: before } });
  return { customer, changed: true };
}
