// An operator's backend talking to `flowise-billing serve`: create the customer at sign-up,
// sign a billing token before calling a Flowise chatflow, credit after a Stripe Checkout payment,
// and show the balance. Copy it; replace `user` and `session` with your own objects.
//
//   FLOWISE_BILLING_URL=http://127.0.0.1:8787 FLOWISE_BILLING_API_KEY=fbk_… (apikeys create --scope write)

export function billingClient(base = process.env.FLOWISE_BILLING_URL ?? 'http://127.0.0.1:8787', key = process.env.FLOWISE_BILLING_API_KEY) {
  return async function billing(method, path, body, idempotencyKey) {
    const res = await fetch(base + path, {
      method,
      headers: {
        authorization: `Bearer ${key}`,
        'content-type': 'application/json',
        ...(idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await res.json();
    // json.error.code is one of the closed codes (INSUFFICIENT_FUNDS, CUSTOMER_NOT_FOUND, …).
    if (!res.ok) throw Object.assign(new Error(json.error.message), json.error);
    return json;
  };
}

/** On sign-up; safe to repeat (same key, same customer). */
export async function onSignup(billing, user) {
  return billing('POST', '/v1/customers', { id: user.id, name: user.email }, `signup-${user.id}`);
}

/** Before a prediction: send it to Flowise as overrideConfig.vars.billingToken. */
export async function billingTokenFor(billing, user) {
  const { token } = await billing('POST', '/v1/tokens', { customerId: user.id, ttlSeconds: 3600 });
  return token;
}

/** In the checkout.session.completed webhook handler: the session id makes a redelivery a no-op. */
export async function onCheckoutCompleted(billing, user, session) {
  const amountUsd = `${Math.floor(session.amount_total / 100)}.${String(session.amount_total % 100).padStart(2, '0')}`;
  return billing('POST', `/v1/customers/${encodeURIComponent(user.id)}/topups`, { amountUsd, memo: `checkout ${session.id}` }, `checkout-${session.id}`);
}

/** What to show the user. */
export async function balanceOf(billing, user) {
  const { availableUsd } = await billing('GET', `/v1/customers/${encodeURIComponent(user.id)}/balance`);
  return availableUsd;
}
