import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Standard Webhooks signatures (standardwebhooks.com): the secret is
 * `whsec_` + base64 bytes; each request carries `webhook-id`,
 * `webhook-timestamp` (Unix seconds) and `webhook-signature` =
 * `v1,` + base64(HMAC-SHA256(secret, `${id}.${timestamp}.${body}`)).
 */
export const SECRET_PREFIX = 'whsec_';

export function newEndpointSecret(): string {
  return SECRET_PREFIX + randomBytes(24).toString('base64');
}

function keyOf(secret: string): Buffer {
  return Buffer.from(secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret, 'base64');
}

export function signature(secret: string, id: string, timestampS: number, body: string): string {
  return `v1,${createHmac('sha256', keyOf(secret)).update(`${id}.${timestampS}.${body}`).digest('base64')}`;
}

/**
 * The request headers. With several secrets (an endpoint in a rotation's overlap, secrets.ts) the signature header
 * carries one `v1,` signature per secret, space-separated, as the spec provides for rotation: a receiver that
 * verifies with any one of them accepts.
 */
export function webhookHeaders(secrets: string | readonly string[], id: string, timestampS: number, body: string): Record<string, string> {
  return {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(timestampS),
    'webhook-signature': (typeof secrets === 'string' ? [secrets] : secrets).map((s) => signature(s, id, timestampS, body)).join(' '),
  };
}

/** Constant-time check of one `v1,` signature among the space-separated list a header may carry. */
export function verifySignature(secret: string, id: string, timestampS: number, body: string, header: string): boolean {
  const want = Buffer.from(signature(secret, id, timestampS, body));
  return header.split(' ').some((s) => {
    const got = Buffer.from(s);
    return got.length === want.length && timingSafeEqual(got, want);
  });
}
