/**
 * Flowise credential "Stripe Billing": the Stripe secret key and webhook
 * signing secret used by the Stripe sync. Free of imports (see BillingLedger).
 */
class StripeBillingCredential {
  label = 'Stripe Billing';
  name = 'stripeBilling';
  version = 1.0;
  // No node reads it: Stripe sync runs outside Flowise (the CLI and `serve`), with STRIPE_SECRET_KEY / STRIPE_WEBHOOK_SECRET.
  description =
    'Stores Stripe keys in Flowise only: no flowise-billing node reads this credential. Stripe sync (meter events, auto-recharge, webhooks, refunds, payouts) runs in the flowise-billing CLI and serve, which take STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET from their environment.';
  inputs = [
    {
      label: 'Stripe Secret Key',
      name: 'stripeSecretKey',
      type: 'password',
      placeholder: 'sk_live_… or rk_live_…',
    },
    {
      label: 'Webhook Signing Secret',
      name: 'stripeWebhookSecret',
      type: 'password',
      optional: true,
      placeholder: 'whsec_…',
    },
  ];
}

export const credClass = StripeBillingCredential;
