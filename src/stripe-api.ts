/** `flowise-billing/stripe`: Stripe sync (meter events, recharge, webhooks, reconcile, payouts) and top-up checkout. */
export * from './stripe/index';
export { createTopUpCheckout, MAX_CHECKOUT_CENTS, MIN_CHECKOUT_CENTS, type TopUpCheckout, type TopUpCheckoutInput } from './stripe/checkout';
