import type { Command } from 'commander';
import { z } from 'zod';
import { CustomerNotFoundError, ValidationError } from '../../errors';
import { signBillingToken, verifyBillingToken } from '../../identity/token';
import type { CliContext } from '../context';
import { keyValues } from '../output';
import { customerId, integer, parseInput } from '../validate';

/** The secret is read from the environment only: a command-line argument would show in process lists and shell history. */
function secret(cli: CliContext): string {
  const s = cli.io.env.FLOWISE_BILLING_TOKEN_SECRET;
  if (!s) throw new ValidationError('Set FLOWISE_BILLING_TOKEN_SECRET to the token secret of the Billing Ledger credential', { field: 'FLOWISE_BILLING_TOKEN_SECRET' });
  return s;
}

export function registerToken(program: Command, cli: CliContext): void {
  const token = program.command('token').description('billing tokens: how an end customer is identified to a flow (secret from $FLOWISE_BILLING_TOKEN_SECRET)');
  token
    .command('sign <customer>')
    .description('sign a token for a customer; pass it to predictions as overrideConfig.vars.billingToken')
    .option('--ttl <seconds>', 'lifetime in seconds (default 3600, at most 30 days)', '3600')
    .option('--allow-unknown', 'sign even when the customer is not in the ledger (e.g. it is created later)')
    .action(async (customer: string, opts: { ttl: string; allowUnknown?: boolean }) => {
      const input = parseInput(z.object({ customer: customerId, ttl: integer('ttl', 1, 30 * 24 * 3600) }), { customer, ttl: opts.ttl });
      const key = secret(cli);
      if (!opts.allowUnknown) {
        // A token for a customer that does not exist only fails later, inside a flow: refuse it here.
        const known = await cli.readLedger((ledger) => ledger.findCustomer(input.customer));
        if (!known) throw new CustomerNotFoundError(input.customer);
      }
      const t = signBillingToken(key, input.customer, { ttlSeconds: input.ttl });
      // The token's own exp (whole seconds), as `token verify` shows it; a second clock reading here ran up to 1 s later.
      const expiresAt = new Date(verifyBillingToken(t, key).expiresAt * 1000).toISOString();
      cli.print({ json: { customerId: input.customer, token: t, expiresAt }, human: () => t });
    });
  token
    .command('verify <token>')
    .description('check a token and show whom it names')
    .action(async (t: string) => {
      const claims = verifyBillingToken(t, secret(cli));
      const json = { customerId: claims.customerId, expiresAt: new Date(claims.expiresAt * 1000).toISOString() };
      cli.print({ json, human: () => keyValues([['customer', json.customerId], ['expires', json.expiresAt]]) });
    });
}
