import type { Command } from 'commander';

/**
 * Examples shown at the end of each command's --help, in one place so every
 * command has them (a test walks the program and fails on a command without).
 * Keyed by the command path below `flowise-billing`.
 */
export const EXAMPLES: Readonly<Record<string, readonly string[]>> = {
  demo: ['flowise-billing demo', 'flowise-billing demo --json'],
  migrate: ['flowise-billing migrate', 'flowise-billing --db postgres://billing@db.internal:5432/billing?schema=billing migrate'],
  customers: ['flowise-billing customers create acme --name "Acme Inc"', 'flowise-billing customers list --format csv'],
  'customers create': ['flowise-billing customers create acme --name "Acme Inc"'],
  'customers list': ['flowise-billing customers list', 'flowise-billing customers list --format tsv | cut -f1'],
  'customers update': ['flowise-billing customers update acme --name "Acme Corporation"', 'flowise-billing customers update acme --clear-name'],
  'customers show': ['flowise-billing customers show acme'],
  topup: ['flowise-billing topup acme 10.00 --key invoice-1042', 'flowise-billing topup acme 25 --memo "wire transfer 2026-11"'],
  price: ['flowise-billing price Training 120', 'flowise-billing price tokens 1200 --model gpt-4o-mini --output-tokens 300', 'flowise-billing price PaidPublicFlowRun 12'],
  charge: ['flowise-billing charge acme Inference 4', 'flowise-billing charge acme Zipper 50 --key job-77 --json'],
  refund: ['flowise-billing statement acme --limit 5   # the "charge id" column', 'flowise-billing refund chg_123 0.05 --reason "wrong model"'],
  balance: ['flowise-billing balance acme', 'flowise-billing balance acme --json'],
  statement: ['flowise-billing statement acme --limit 20', 'flowise-billing statement acme --format csv > acme.csv'],
  ratecard: ['flowise-billing ratecard show', 'flowise-billing ratecard import-models --version models-2026-11'],
  'ratecard show': ['flowise-billing ratecard show', 'flowise-billing ratecard show --version 2026-11-01 --json'],
  'ratecard list': ['flowise-billing ratecard list'],
  'ratecard import': ['flowise-billing ratecard import ./ratecards/default.json', 'flowise-billing ratecard import card.json --no-activate'],
  'ratecard import-models': ['flowise-billing ratecard import-models', 'flowise-billing ratecard import-models --version models-2026-11 --no-activate --json'],
  'ratecard activate': ['flowise-billing ratecard activate 2026-11-01'],
  holds: ['flowise-billing holds sweep'],
  'holds sweep': ['flowise-billing holds sweep', 'flowise-billing holds sweep --json'],
  audit: ['flowise-billing audit --customer acme --limit 50', 'flowise-billing audit --format csv > audit.csv'],
  plans: ['flowise-billing plans list', 'flowise-billing plans show starter'],
  'plans list': ['flowise-billing plans list'],
  'plans show': ['flowise-billing plans show free --json'],
  'plans create': ['flowise-billing plans create team --name Team --base-usd 49 --sessions 5000 --managed --alerts 80,95'],
  'plans update': ['flowise-billing plans update team --sessions unlimited', 'flowise-billing plans update free --alerts 50,80'],
  subscribe: ['flowise-billing subscribe acme starter'],
  cancel: ['flowise-billing cancel acme'],
  sessions: ['flowise-billing sessions touch acme chat-42'],
  'sessions touch': ['flowise-billing sessions touch acme chat-42', 'flowise-billing sessions touch acme chat-42 --at 2026-11-23T10:00:00Z'],
  usage: ['flowise-billing usage acme', 'flowise-billing usage acme --period 2026-10'],
  'usage record': ['flowise-billing usage record acme api_calls 120 --key batch-2026-11-23'],
  budget: ['flowise-billing budget set acme 50'],
  'budget set': ['flowise-billing budget set acme 50', 'flowise-billing budget set acme none'],
  alerts: ['flowise-billing alerts acme', 'flowise-billing alerts acme --json'],
  invoice: ['flowise-billing invoice preview acme'],
  'invoice preview': ['flowise-billing invoice preview acme', 'flowise-billing invoice preview acme --json'],
  'invoice close': ['flowise-billing invoice close acme'],
  stripe: ['flowise-billing stripe setup', 'flowise-billing stripe checkout acme 20 --success-url https://app.example/paid'],
  'stripe setup': ['STRIPE_SECRET_KEY=sk_test_… flowise-billing stripe setup'],
  'stripe customer': ['flowise-billing stripe customer acme --email billing@acme.test', 'flowise-billing stripe customer acme --link cus_123'],
  'stripe sync': ['flowise-billing stripe sync --once', 'flowise-billing stripe sync --watch'],
  'stripe status': ['flowise-billing stripe status --json'],
  'stripe retry-failed': ['flowise-billing stripe retry-failed'],
  'stripe reconcile': ['flowise-billing stripe reconcile --period 2026-10'],
  'stripe recharge': ['flowise-billing stripe recharge check'],
  'stripe recharge set': ['flowise-billing stripe recharge set acme --threshold 5 --amount 20 --payment-method pm_card_visa'],
  'stripe recharge check': ['flowise-billing stripe recharge check acme'],
  webhooks: ['flowise-billing webhooks serve --port 8787'],
  'webhooks serve': ['STRIPE_WEBHOOK_SECRET=whsec_… flowise-billing webhooks serve --port 8787'],
  'stripe checkout': [
    'flowise-billing stripe checkout acme 20 --success-url https://app.example/paid',
    'flowise-billing stripe checkout acme 50 --success-url https://app.example/paid --cancel-url https://app.example/billing --json',
  ],
  token: ['flowise-billing token sign acme --ttl 900'],
  'token sign': [
    'export FLOWISE_BILLING_TOKEN_SECRET="$(openssl rand -base64 48)"   # the same value as in the Billing Ledger credential',
    'flowise-billing token sign acme --ttl 900',
    'flowise-billing token sign new-customer --allow-unknown --json',
  ],
  'token verify': ['flowise-billing token verify "$TOKEN"'],
  install: ['flowise-billing install --flowise /opt/flowise', 'flowise-billing install --flowise "$(npm root -g)/flowise"'],
  uninstall: ['flowise-billing uninstall --flowise /opt/flowise'],
  serve: [
    'FLOWISE_BILLING_TOKEN_SECRET=… flowise-billing --db ~/.flowise/billing.sqlite serve --port 8787',
    'flowise-billing --db postgres://billing@db.internal:5432/billing serve --host 0.0.0.0 --secure-cookies --cors https://app.example.com',
  ],
  apikeys: ['flowise-billing apikeys create --scope write --name backend'],
  'apikeys create': ['flowise-billing apikeys create --scope admin --name ops', 'flowise-billing apikeys create --scope read --name dashboard --json'],
  'apikeys list': ['flowise-billing apikeys list'],
  'apikeys revoke': ['flowise-billing apikeys revoke 1194e59072f545bf'],
  endpoints: ['flowise-billing endpoints create https://app.example.com/billing-hooks --events balance.low,run.refused'],
  'endpoints create': ['flowise-billing endpoints create https://app.example.com/billing-hooks', 'flowise-billing endpoints create https://app.example.com/hooks --events topup.succeeded,invoice.closed --json'],
  'endpoints list': ['flowise-billing endpoints list'],
  'endpoints update': ['flowise-billing endpoints update we_… --disable', 'flowise-billing endpoints update we_… --events "*" --enable'],
  'endpoints delete': ['flowise-billing endpoints delete we_…'],
  'endpoints retry': ['flowise-billing endpoints retry we_…', 'flowise-billing endpoints retry'],
  'endpoints rotate-secret': ['flowise-billing endpoints rotate-secret we_…', 'flowise-billing endpoints rotate-secret we_… --overlap 0  # a leaked secret: the old one stops now'],
  'endpoints status': ['flowise-billing endpoints status --json'],
  'endpoints deliver': ['flowise-billing endpoints deliver', 'flowise-billing endpoints deliver --watch'],
  doctor: ['flowise-billing doctor --flowise /opt/flowise', 'flowise-billing --db postgres://billing@db.internal:5432/billing doctor --online', 'flowise-billing doctor --node "$(which node)" --json'],
};

function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Appends each command's examples to its --help; returns the paths that have none (the test's business). */
export function addExamples(program: Command): string[] {
  const missing: string[] = [];
  const visit = (cmd: Command) => {
    for (const sub of cmd.commands) {
      const p = commandPath(sub);
      const examples = EXAMPLES[p];
      if (examples?.length) sub.addHelpText('after', `\nExamples:\n${examples.map((e) => `  ${e}`).join('\n')}`);
      else missing.push(p);
      visit(sub);
    }
  };
  visit(program);
  return missing;
}
