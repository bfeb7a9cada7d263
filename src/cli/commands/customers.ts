import type { Command } from 'commander';
import { z } from 'zod';
import { formatUsd } from '../../money';
import type { Balance, Customer } from '../../ledger/types';
import { CLI_ACTOR, type CliContext } from '../context';
import { keyValues, shortTime, table, usd } from '../output';
import { customerId, parseInput, text } from '../validate';

function customerJson(c: Customer, b?: Balance): Record<string, unknown> {
  return {
    customerId: c.id,
    name: c.name,
    createdAt: c.createdAt,
    ...(b ? { balanceUsd: formatUsd(b.balance), heldUsd: formatUsd(b.held), availableUsd: formatUsd(b.available) } : {}),
  };
}

export function registerCustomers(program: Command, cli: CliContext): void {
  const customers = program.command('customers').description('create, update, list and show customers');

  customers
    .command('create <id>')
    .description('create a customer (repeating it with the same name changes nothing)')
    .option('--name <name>', 'display name')
    .action(async (id: string, opts: { name?: string }) => {
      const input = parseInput(z.object({ id: customerId, name: text('name', 200).optional() }), { id, name: opts.name });
      const { c, created } = await cli.withLedger(async (ledger) => {
        const existed = await ledger.findCustomer(input.id);
        const c = await ledger.createCustomer({ id: input.id, name: input.name, actor: CLI_ACTOR });
        return { c, created: !existed };
      });
      cli.print({
        json: { ...customerJson(c), created },
        human: () =>
          `${created ? 'Created customer' : 'Customer already exists:'} ${c.id}\n` +
          keyValues([
            ['name', c.name ?? '—'],
            ['created (UTC)', shortTime(c.createdAt)],
          ], '  '),
      });
    });

  customers
    .command('update <id>')
    .description('change a customer\'s display name (the same name again changes nothing)')
    .option('--name <name>', 'new display name')
    .option('--clear-name', 'remove the display name')
    .action(async (id: string, opts: { name?: string; clearName?: boolean }) => {
      const input = parseInput(
        z
          .object({ id: customerId, name: text('name', 200).optional(), clearName: z.boolean().optional() })
          .refine((o) => (o.name !== undefined) !== (o.clearName === true), 'give either --name <name> or --clear-name'),
        { id, name: opts.name, clearName: opts.clearName },
      );
      const c = await cli.withLedger((ledger) => ledger.updateCustomer({ id: input.id, name: input.clearName ? null : input.name!, actor: CLI_ACTOR }));
      cli.print({
        json: customerJson(c),
        human: () => `Updated customer ${c.id}\n${keyValues([['name', c.name ?? '—']], '  ')}`,
      });
    });

  customers
    .command('list')
    .description('every customer with its balance')
    .action(async () => {
      const rows = await cli.readLedger(async (ledger) => {
        const all = await ledger.listCustomers();
        return Promise.all(all.map(async (c) => ({ c, b: await ledger.balance(c.id) })));
      });
      cli.print({
        json: { customers: rows.map(({ c, b }) => customerJson(c, b)) },
        human: () =>
          table(
            [
              { header: 'id', value: (r) => r.c.id },
              { header: 'name', value: (r) => r.c.name ?? '' },
              { header: 'created (UTC)', value: (r) => shortTime(r.c.createdAt) },
              { header: 'balance', align: 'right', value: (r) => usd(r.b.balance) },
              { header: 'held', align: 'right', value: (r) => usd(r.b.held) },
              { header: 'available', align: 'right', value: (r) => usd(r.b.available) },
            ],
            rows,
          ),
      });
    });

  customers
    .command('show <id>')
    .description('one customer with balance, held and available')
    .action(async (id: string) => {
      const input = parseInput(z.object({ id: customerId }), { id });
      const { c, b } = await cli.readLedger(async (ledger) => {
        const cust = await ledger.getCustomer(input.id);
        return { c: cust, b: await ledger.balance(input.id) };
      });
      cli.print({
        json: customerJson(c, b),
        human: () =>
          keyValues([
            ['customer', c.id],
            ['name', c.name ?? '—'],
            ['created (UTC)', shortTime(c.createdAt)],
            ['balance', usd(b.balance)],
            ['held', usd(b.held)],
            ['available', usd(b.available)],
          ]),
      });
    });
}
