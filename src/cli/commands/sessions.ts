import type { Command } from 'commander';
import { z } from 'zod';
import { ValidationError } from '../../errors';
import type { CliContext } from '../context';
import { keyValues } from '../output';
import { customerId, isoTime, parseInput, text } from '../validate';

export function registerSessions(program: Command, cli: CliContext): void {
  const sessions = program.command('sessions').description('conversation sessions');
  sessions
    .command('touch <customer> <conversation>')
    .description('record a message: continues the session or starts a new one (refused when the quota is used up)')
    .option('--at <ISO time>', 'when the message arrived (default now)')
    .action(async (customer: string, conversation: string, opts: { at?: string }) => {
      const input = parseInput(z.object({ customer: customerId, conversation: text('conversation id', 255), at: isoTime('at').optional() }), {
        customer,
        conversation,
        at: opts.at,
      });
      // A message cannot arrive in the future: that would move the billing period on for good.
      if (input.at && input.at.getTime() > Date.now() + 5 * 60_000) {
        throw new ValidationError(`--at ${opts.at} is in the future`, { field: 'at', value: opts.at });
      }
      const a = await cli.withQuota((quota) =>
        quota.admitRun({ customerId: input.customer, conversationId: input.conversation, at: input.at }),
      );
      cli.print({
        json: { customerId: input.customer, conversationId: input.conversation, ...a },
        human: () =>
          keyValues([
            ['session', `${a.session} (${a.sessionId})`],
            ['plan', a.tier],
            ['sessions', a.sessionsLimit === null ? `${a.sessionsUsed} (unlimited)` : `${a.sessionsUsed} of ${a.sessionsLimit}, ${a.sessionsRemaining} left`],
          ]),
      });
    });
}
