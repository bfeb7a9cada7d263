/**
 * Flowise credential "Billing Ledger": where the ledger lives and the secret
 * that verifies billing tokens. Deliberately free of imports: Flowise loads
 * credential files without a try/catch, so one that throws on require would
 * stop the whole server from starting.
 */
class BillingLedgerCredential {
  label = 'Billing Ledger';
  name = 'billingLedger';
  version = 1.0;
  description =
    'Ledger database and billing-token secret for the flowise-billing nodes. Leave the database empty for an SQLite file in the Flowise home (billing.sqlite); use a PostgreSQL URL when several Flowise processes or queue-mode workers share the ledger.';
  inputs = [
    {
      label: 'Ledger Database',
      name: 'ledgerDatabase',
      // A PostgreSQL URL may carry a password, so the field is masked and never exported with a flow.
      type: 'password',
      optional: true,
      placeholder: 'postgres://user:password@host:5432/billing   or   /path/to/billing.sqlite',
      description: 'SQLite file path or postgres:// URL. Empty: $FLOWISE_BILLING_DB, else billing.sqlite next to the Flowise database.',
    },
    {
      label: 'Billing Token Secret',
      name: 'billingTokenSecret',
      type: 'password',
      optional: true,
      description:
        'HS256 secret (at least 32 characters) that verifies billing tokens. Your backend signs a token per end user with signBillingToken() from flowise-billing and sends it as the override variable billingToken.',
    },
  ];
}

export const credClass = BillingLedgerCredential;
