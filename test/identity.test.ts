import { createHmac } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { describe, expect, it, vi } from 'vitest';
import {
  BILLING_TOKEN_AUDIENCE,
  BILLING_TOKEN_ISSUER,
  BillingTokenError,
  resolveCustomer,
  signBillingToken,
  verifyBillingToken,
} from '../src/identity';
import { BillingError } from '../src/errors';

const SECRET = 'a-test-secret-that-is-long-enough-0123456789';
const NOW = 1_800_000_000;

function refusal(fn: () => unknown): BillingTokenError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BillingTokenError);
    expect(e).toBeInstanceOf(BillingError);
    return e as BillingTokenError;
  }
  throw new Error('expected a refusal');
}

describe('billing tokens', () => {
  it('round-trips customer id and expiry', () => {
    const t = signBillingToken(SECRET, 'cust_42', { now: NOW, ttlSeconds: 600 });
    expect(verifyBillingToken(t, SECRET, { now: NOW + 10 })).toEqual({ customerId: 'cust_42', expiresAt: NOW + 600, issuedAt: NOW });
    const decoded = jwt.decode(t, { complete: true }) as jwt.Jwt;
    expect(decoded.header.alg).toBe('HS256');
    expect(decoded.payload).toMatchObject({ iss: BILLING_TOKEN_ISSUER, aud: BILLING_TOKEN_AUDIENCE, sub: 'cust_42' });
  });

  it('refuses forged, expired, foreign and malformed tokens with a typed reason and no secret in the message', () => {
    const good = signBillingToken(SECRET, 'cust_42', { now: NOW, ttlSeconds: 60 });
    const forged = signBillingToken('another-secret-that-is-also-long-enough-xyz', 'cust_42', { now: NOW });
    const cases: Array<[unknown, string, number?]> = [
      [forged, 'bad_signature'],
      [good.slice(0, -3) + 'AAA', 'bad_signature'],
      [good, 'expired', NOW + 60 + 6],
      [jwt.sign({ sub: 'c', exp: NOW + 60 }, SECRET, { issuer: 'someone-else', audience: BILLING_TOKEN_AUDIENCE }), 'wrong_issuer'],
      [jwt.sign({ sub: 'c', exp: NOW + 60 }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: 'flowise' }), 'wrong_audience'],
      [jwt.sign({ sub: 'c', iat: NOW }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE }), 'no_expiry'],
      [jwt.sign({ sub: 'bad id!', exp: NOW + 60 }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE }), 'bad_customer'],
      [jwt.sign({ sub: 'c', exp: NOW + 60 }, SECRET, { algorithm: 'HS512', issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE }), 'bad_signature'],
      // alg "none": an unsigned token claiming any customer
      [`${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'c', exp: NOW + 60, iss: BILLING_TOKEN_ISSUER, aud: BILLING_TOKEN_AUDIENCE })).toString('base64url')}.`, 'bad_signature'],
      ['not-a-jwt', 'malformed'],
      [42, 'malformed'],
      [undefined, 'missing'],
      ['', 'missing'],
    ];
    for (const [token, reason, now] of cases) {
      const e = refusal(() => verifyBillingToken(token, SECRET, { now: now ?? NOW }));
      expect(e.reason, String(token)).toBe(reason);
      expect(e.code).toBe('UNAUTHORIZED');
      expect(e.details).toEqual({ field: 'billingToken', reason });
      expect(e.message).not.toContain(SECRET);
      if (typeof token === 'string' && token) expect(e.message).not.toContain(token);
    }
  });

  it('tolerates a few seconds of clock skew, not more', () => {
    const t = signBillingToken(SECRET, 'c1', { now: NOW, ttlSeconds: 60 });
    expect(verifyBillingToken(t, SECRET, { now: NOW + 63 }).customerId).toBe('c1');
    expect(refusal(() => verifyBillingToken(t, SECRET, { now: NOW + 66 })).reason).toBe('expired');
  });

  it('a token verified before is checked again for its time claims and its secret', () => {
    // nbf 100 s after issue: valid from NOW + 95 (tolerance), expired from NOW + 600 + 5.
    const t = jwt.sign({ sub: 'c2', iat: NOW, nbf: NOW + 100, exp: NOW + 600 }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE });
    expect(verifyBillingToken(t, SECRET, { now: NOW + 200 }).customerId).toBe('c2');
    expect(verifyBillingToken(t, SECRET, { now: NOW + 200 })).toEqual({ customerId: 'c2', expiresAt: NOW + 600, issuedAt: NOW });
    expect(refusal(() => verifyBillingToken(t, SECRET, { now: NOW + 90 })).reason).toBe('not_yet_valid');
    expect(refusal(() => verifyBillingToken(t, SECRET, { now: NOW + 605 })).reason).toBe('expired');
    expect(refusal(() => verifyBillingToken(t, 'another-secret-that-is-also-long-enough-xyz', { now: NOW + 200 })).reason).toBe('bad_signature');
    expect(refusal(() => verifyBillingToken(t, undefined, { now: NOW + 200 })).reason).toBe('no_secret');
  });

  it('refuses a signed token whose payload is no JSON object as malformed, not as meant for someone else', () => {
    for (const payload of ['"just a string"', '[1,2,3]', '42']) {
      const head = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');
      const body = Buffer.from(payload).toString('base64url');
      const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
      expect(refusal(() => verifyBillingToken(`${head}.${body}.${sig}`, SECRET, { now: NOW })).reason, payload).toBe('malformed');
    }
    const foreign = jwt.sign({ sub: 'c', exp: NOW + 60 }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: 'flowise' });
    expect(refusal(() => verifyBillingToken(foreign, SECRET, { now: NOW })).reason).toBe('wrong_audience');
  });

  it('refuses a token whose exp is no time at all (past the Date range) as malformed, not an internal error later', () => {
    const huge = jwt.sign({ sub: 'c3', iat: NOW, exp: 1e20 }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE });
    expect(refusal(() => verifyBillingToken(huge, SECRET, { now: NOW })).reason).toBe('malformed');
    // The latest representable time is still a (long) expiry.
    const last = jwt.sign({ sub: 'c3', iat: NOW, exp: 8.64e12 }, SECRET, { issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE });
    expect(verifyBillingToken(last, SECRET, { now: NOW }).expiresAt).toBe(8.64e12);
  });

  it('needs a strong secret and a valid customer id to sign', () => {
    expect(() => signBillingToken('short', 'c1')).toThrow(/at least 32 bytes/);
    expect(() => signBillingToken(SECRET, 'bad id')).toThrow(/customer id/);
    expect(() => signBillingToken(SECRET, 'c1', { ttlSeconds: 0 })).toThrow(/ttlSeconds/);
    expect(refusal(() => verifyBillingToken('x.y.z', undefined)).reason).toBe('no_secret');
  });
});

describe('customer resolution', () => {
  const token = signBillingToken(SECRET, 'acme', { now: NOW });

  it('takes the customer from a verified token in the configured variable', () => {
    expect(resolveCustomer({ source: 'billingToken', vars: { billingToken: token }, tokenSecret: SECRET, now: NOW })).toEqual({
      customerId: 'acme',
      source: 'billingToken',
      tokenExpiresAt: NOW + 3600,
    });
    expect(resolveCustomer({ source: 'billingToken', tokenVariable: 'bt', vars: { bt: token }, tokenSecret: SECRET, now: NOW }).customerId).toBe('acme');
    expect(refusal(() => resolveCustomer({ source: 'billingToken', vars: { bt: token }, tokenSecret: SECRET, now: NOW })).reason).toBe('missing');
  });

  it('never takes the customer from an unsigned variable unless the insecure switch is chosen, and then warns', () => {
    expect(refusal(() => resolveCustomer({ source: 'billingToken', vars: { billingToken: 'acme', billingCustomerId: 'acme' }, tokenSecret: SECRET })).reason).toBe(
      'malformed',
    );
    const warn = vi.fn();
    expect(resolveCustomer({ source: 'insecureRawId', vars: { billingCustomerId: 'acme' }, logger: { warn } })).toEqual({ customerId: 'acme', source: 'insecureRawId' });
    expect(warn).toHaveBeenCalledOnce();
    expect(warn.mock.calls[0]![0]).toMatch(/INSECURE/);
    expect(() => resolveCustomer({ source: 'insecureRawId', vars: {} })).toThrow(/billingCustomerId/);
  });

  it('uses server-side workspace / organisation ids and the fixed customer', () => {
    expect(resolveCustomer({ source: 'workspace', workspaceId: 'ws-1', vars: { billingToken: token } })).toEqual({ customerId: 'ws-1', source: 'workspace' });
    expect(resolveCustomer({ source: 'organization', orgId: 'org-1' })).toEqual({ customerId: 'org-1', source: 'organization' });
    expect(resolveCustomer({ source: 'fixed', fixedCustomerId: ' cust-9 ' })).toEqual({ customerId: 'cust-9', source: 'fixed' });
    expect(() => resolveCustomer({ source: 'workspace' })).toThrow(/workspace id/);
    expect(() => resolveCustomer({ source: 'fixed', fixedCustomerId: '' })).toThrow(/Fixed Customer ID is empty/);
    expect(() => resolveCustomer({ source: 'fixed', fixedCustomerId: 'a b' })).toThrow(/not a valid customer id/);
    expect(() => resolveCustomer({ source: 'nope' as never })).toThrow(/Unknown customer source/);
  });
});
