import { createSecretKey, type KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { BillingError, ValidationError } from '../errors';
import { CUSTOMER_ID_PATTERN } from '../schemas';

/**
 * Signed billing tokens: an HS256 JWT naming the customer (`sub`) with an
 * expiry, signed with the secret of the Billing Ledger credential. The operator's
 * backend signs one per end user; Flowise nodes verify it. Issuer and audience
 * are fixed, so a JWT minted for anything else (a Flowise session, another
 * product sharing the secret by mistake) is refused.
 */
export const BILLING_TOKEN_ISSUER = 'flowise-billing';
export const BILLING_TOKEN_AUDIENCE = 'flowise-billing:customer';
/** Seconds of clock skew tolerated on `exp`/`nbf`/`iat`. */
export const BILLING_TOKEN_CLOCK_TOLERANCE_S = 5;
/** Shortest accepted secret (bytes): HS256 keys shorter than the hash are brute-forceable. */
export const MIN_SECRET_BYTES = 32;
/** Longest lifetime `signBillingToken` issues: 30 days. */
export const MAX_TOKEN_TTL_S = 30 * 24 * 3600;


/**
 * Why a token was refused. A closed set: callers map it to a message; the token
 * and the secret are never part of the error.
 */
export const TOKEN_FAILURES = ['missing', 'malformed', 'bad_signature', 'expired', 'not_yet_valid', 'wrong_issuer', 'wrong_audience', 'no_expiry', 'bad_customer', 'no_secret'] as const;
export type TokenFailure = (typeof TOKEN_FAILURES)[number];

const MESSAGES: Record<TokenFailure, string> = {
  missing: 'no billing token was sent',
  malformed: 'the billing token is not a valid JWT',
  bad_signature: 'the billing token signature is invalid (forged, or signed with another secret)',
  expired: 'the billing token has expired',
  not_yet_valid: 'the billing token is not valid yet',
  wrong_issuer: `the billing token was not issued by ${BILLING_TOKEN_ISSUER}`,
  wrong_audience: `the billing token is not meant for ${BILLING_TOKEN_AUDIENCE}`,
  no_expiry: 'the billing token has no expiry (exp)',
  bad_customer: 'the billing token names no valid customer id',
  no_secret: 'no billing token secret is configured in the Billing Ledger credential',
};

/** A refused billing token (code UNAUTHORIZED); `details.reason` says which check failed. */
export class BillingTokenError extends BillingError {
  readonly reason: TokenFailure;
  constructor(reason: TokenFailure) {
    super('UNAUTHORIZED', `Billing token refused: ${MESSAGES[reason]}`, { field: 'billingToken', reason });
    this.reason = reason;
  }
}

export interface BillingTokenClaims {
  readonly customerId: string;
  /** Expiry, seconds since the epoch. */
  readonly expiresAt: number;
  readonly issuedAt: number | null;
}

function checkSecret(secret: string | undefined): string {
  if (typeof secret !== 'string' || secret.length === 0) throw new BillingTokenError('no_secret');
  if (Buffer.byteLength(secret, 'utf8') < MIN_SECRET_BYTES) {
    throw new ValidationError(`The billing token secret must be at least ${MIN_SECRET_BYTES} bytes long`, { field: 'tokenSecret' });
  }
  return secret;
}

export interface SignOptions {
  /** Lifetime in seconds (default 3600, at most 30 days). */
  readonly ttlSeconds?: number;
  /** Clock for tests: seconds since the epoch. */
  readonly now?: number;
}

/** Signs a token for `customerId` (what the operator's backend does for each end user). */
export function signBillingToken(secret: string, customerId: string, opts: SignOptions = {}): string {
  checkSecret(secret);
  if (typeof customerId !== 'string' || !CUSTOMER_ID_PATTERN.test(customerId)) {
    throw new ValidationError('customer id must be 1–128 characters: letters, digits and . _ : @ + - (starting with a letter or digit)', { field: 'customerId' });
  }
  const ttl = opts.ttlSeconds ?? 3600;
  if (!Number.isSafeInteger(ttl) || ttl <= 0 || ttl > MAX_TOKEN_TTL_S) {
    throw new ValidationError(`ttlSeconds must be an integer from 1 to ${MAX_TOKEN_TTL_S}`, { field: 'ttlSeconds', value: ttl });
  }
  const iat = opts.now ?? Math.floor(Date.now() / 1000);
  return jwt.sign({ sub: customerId, iat, exp: iat + ttl }, secret, { algorithm: 'HS256', issuer: BILLING_TOKEN_ISSUER, audience: BILLING_TOKEN_AUDIENCE });
}

const keys = new Map<string, KeyObject>();
/**
 * The secret as a KeyObject, made once per secret: given a string, jsonwebtoken
 * first tries it as a PEM public key and catches the failure, on every verify
 * (the costliest part of a verification). A handful of secrets per process.
 */
function secretKey(secret: string): KeyObject {
  let k = keys.get(secret);
  if (!k) {
    if (keys.size >= 32) keys.clear();
    k = createSecretKey(Buffer.from(secret, 'utf8'));
    keys.set(secret, k);
  }
  return k;
}

/**
 * Tokens this process verified, by token and secret: the nodes of a prediction
 * verify the same token, and a caller sends the same token with every
 * prediction until it expires. A hit checks only the time claims again (what
 * can change for a token whose signature, issuer and audience passed).
 */
const verified = new Map<string, { claims: BillingTokenClaims; notBefore: number | null }>();
const MAX_VERIFIED = 1024;

/** Verifies a token and returns its customer; throws BillingTokenError (never echoing the token) when refused. */
export function verifyBillingToken(token: unknown, secret: string | undefined, opts: { now?: number } = {}): BillingTokenClaims {
  if (token === undefined || token === null || token === '') throw new BillingTokenError('missing');
  if (typeof token !== 'string' || token.length > 4096) throw new BillingTokenError('malformed');
  const cacheKey = `${token.trim()}\u0000${checkSecret(secret)}`;
  const hit = verified.get(cacheKey);
  if (hit) {
    // jsonwebtoken's own rules: expired at exp + tolerance, valid from nbf − tolerance.
    const now = opts.now ?? Math.floor(Date.now() / 1000);
    if (now >= hit.claims.expiresAt + BILLING_TOKEN_CLOCK_TOLERANCE_S) throw new BillingTokenError('expired');
    if (hit.notBefore !== null && now < hit.notBefore - BILLING_TOKEN_CLOCK_TOLERANCE_S) throw new BillingTokenError('not_yet_valid');
    return hit.claims;
  }
  const claims = verifyUncached(token, secret!, opts);
  if (verified.size >= MAX_VERIFIED) verified.clear();
  verified.set(cacheKey, claims);
  return claims.claims;
}

function verifyUncached(token: string, secret: string, opts: { now?: number }): { claims: BillingTokenClaims; notBefore: number | null } {
  const key = secretKey(secret);
  let payload: string | jwt.JwtPayload;
  try {
    payload = jwt.verify(token.trim(), key, {
      algorithms: ['HS256'],
      issuer: BILLING_TOKEN_ISSUER,
      audience: BILLING_TOKEN_AUDIENCE,
      clockTolerance: BILLING_TOKEN_CLOCK_TOLERANCE_S,
      clockTimestamp: opts.now,
    });
  } catch (e) {
    const failure = classify(e);
    // jsonwebtoken checks the audience of a payload that is no JSON object (a string, an array) and calls it a wrong one.
    const decoded = failure === 'wrong_audience' ? jwt.decode(token.trim()) : null;
    throw new BillingTokenError(failure === 'wrong_audience' && (typeof decoded !== 'object' || decoded === null || Array.isArray(decoded)) ? 'malformed' : failure);
  }
  if (typeof payload === 'string') throw new BillingTokenError('malformed');
  if (typeof payload.exp !== 'number') throw new BillingTokenError('no_expiry');
  // An exp past what a Date can hold (±8.64e12 s) is no time: callers show expiresAt as a date, which would throw.
  if (Number.isNaN(new Date(payload.exp * 1000).getTime())) throw new BillingTokenError('malformed');
  if (typeof payload.sub !== 'string' || !CUSTOMER_ID_PATTERN.test(payload.sub)) throw new BillingTokenError('bad_customer');
  return {
    claims: { customerId: payload.sub, expiresAt: payload.exp, issuedAt: typeof payload.iat === 'number' ? payload.iat : null },
    notBefore: typeof payload.nbf === 'number' ? payload.nbf : null,
  };
}

function classify(e: unknown): TokenFailure {
  const err = e as { name?: string; message?: string };
  if (err?.name === 'TokenExpiredError') return 'expired';
  if (err?.name === 'NotBeforeError') return 'not_yet_valid';
  const msg = String(err?.message ?? '');
  if (/signature/.test(msg)) return 'bad_signature';
  if (/audience/.test(msg)) return 'wrong_audience';
  if (/issuer/.test(msg)) return 'wrong_issuer';
  // "invalid algorithm" (e.g. alg none / RS256 header) is a forgery attempt as far as we are concerned.
  if (/algorithm/.test(msg)) return 'bad_signature';
  return 'malformed';
}
