/**
 * Flowise credential "Stripe Billing": the Stripe secret key and webhook
 * signing secret used by the Stripe sync. Free of imports (see BillingLedger).
 */
class StripeBillingCredential {
  label = 'Stripe Billing';
  name = 'stripeBilling';
  version = 1.0;
  description = 'Stripe keys for flowise-billing: meter events, auto-recharge, webhooks, refunds and payouts.';
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
