import fastifyCookie from '@fastify/cookie';
import fastifyCors from '@fastify/cors';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import { hasZodFastifySchemaValidationErrors, jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { BillingError } from '../errors';
import type { Logger } from '../log';
import { stripeStatus } from '../stripe/cli';
import { allows, BEARER } from './apikeys';
import type { ServerDeps } from './context';
import { dashboardRoutes } from './dashboard/routes';
import { clientErrorResponse, errorBody, toBillingError } from './http-errors';
import { adminRoutes } from './routes/admin';
import { customerRoutes } from './routes/customers';
import { moneyRoutes } from './routes/money';
import { planRoutes } from './routes/plans';

export interface ServerOptions {
  /** Largest request body in bytes (default 64 KiB; rate cards are a few KiB). */
  readonly bodyLimit?: number;
  /** Requests per minute per API key (default 6,000). */
  readonly rateLimitPerMinute?: number;
  /** Origins allowed to call the API from a browser; none by default (no CORS headers at all). */
  readonly corsOrigins?: readonly string[];
  /** The process's logger (src/log.ts); none when absent. */
  readonly log?: Logger;
  /** Mark the dashboard cookie Secure (behind HTTPS). */
  readonly secureCookies?: boolean;
  readonly version?: string;
}

/**
 * Longest path parameter (after %-decoding) the router accepts: above every valid id (customer ids are at
 * most 128 characters), so a slightly long id still reaches its route's schema and gets that message.
 */
const MAX_PATH_PARAM_LENGTH = 256;

/** The `serve` HTTP application: REST API, OpenAPI document, health, metrics and the dashboard. */
export async function buildServer(deps: ServerDeps, opts: ServerOptions = {}): Promise<FastifyInstance> {
  const bodyLimit = opts.bodyLimit ?? 64 * 1024;
  const app = Fastify({
    // Typed as fastify's base logger: a pino Logger is one, and route types stay the default ones.
    ...(opts.log ? { loggerInstance: opts.log as FastifyBaseLogger } : { logger: false }),
    bodyLimit,
    // Request ids in logs; a client-sent one is not trusted as unique.
    genReqId: () => `req_${Math.random().toString(36).slice(2, 12)}`,
    // The router's default (100 characters) is shorter than a valid customer id (128): such customers
    // could be created but not read back.
    routerOptions: { maxParamLength: MAX_PATH_PARAM_LENGTH },
    // Refusals the router makes before any route runs (a malformed %-escape, a path segment past the
    // limit above) skip the error handler; without this they would answer in fastify's own shape.
    frameworkErrors: (err, _req, reply) => {
      const { error, status } = toBillingError(err, bodyLimit);
      deps.metrics.refusals.inc({ code: error.code });
      void (reply as FastifyReply).code(status).send(errorBody(error));
    },
    clientErrorHandler: (err, socket) => {
      const answer = clientErrorResponse(err as { code?: string });
      if (answer && socket.writable) {
        deps.metrics.refusals.inc({ code: 'VALIDATION_ERROR' });
        socket.end(answer.text);
      } else socket.destroy();
    },
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  app.setErrorHandler((err, req, reply) => {
    let status: number;
    let error: BillingError;
    if (hasZodFastifySchemaValidationErrors(err)) {
      const issues = err.validation.map((v) => ({ path: `${err.validationContext ?? 'request'}${v.instancePath.replace(/\//g, '.').replace(/\.$/, '')}`, message: v.message }));
      error = new BillingError('VALIDATION_ERROR', `Invalid ${err.validationContext ?? 'request'}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { issues });
      status = 400;
    } else {
      ({ error, status } = toBillingError(err, bodyLimit));
    }
    deps.metrics.refusals.inc({ code: error.code });
    if (status >= 500) req.log.error({ code: error.code, err: { message: (err as Error).message } }, 'request failed');
    if (error.code === 'RATE_LIMITED') reply.header('retry-after', String(error.details.retryAfterSeconds ?? 60));
    return reply.code(status).send(errorBody(error));
  });
  // A mutation without a body (release, cancel, close, activate, retry, revoke) sent with
  // `Content-Type: application/json`, as the README's operator client sends every request, has no body:
  // it is not malformed JSON. Everything else keeps fastify's parser (and its __proto__ refusal).
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => (body === '' ? done(null, undefined) : parseJson(req, String(body), done)));
  // The API takes JSON only: a text/plain body is 415, as the README says, not a string the schema then calls "not an object".
  app.removeContentTypeParser('text/plain');
  app.setNotFoundHandler((req, reply) => {
    deps.metrics.refusals.inc({ code: 'NOT_FOUND' });
    return reply.code(404).send(errorBody(new BillingError('NOT_FOUND', `No route ${req.method} ${req.url.split('?')[0]}`, { method: req.method })));
  });

  await app.register(fastifyCookie);
  if (opts.corsOrigins && opts.corsOrigins.length > 0) {
    await app.register(fastifyCors, { origin: [...opts.corsOrigins], allowedHeaders: ['authorization', 'content-type', 'idempotency-key'], methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] });
  }
  await app.register(fastifyRateLimit, {
    max: opts.rateLimitPerMinute ?? 6000,
    timeWindow: 60_000,
    // Per API key (its id), else per address; health and metrics are exempt.
    keyGenerator: (req) => /^Bearer\s+fbk_([a-f0-9]{16})_/i.exec(req.headers.authorization ?? '')?.[1] ?? req.ip,
    allowList: (req) => req.url === '/healthz' || req.url === '/metrics',
    errorResponseBuilder: (_req, ctx) =>
      Object.assign(new BillingError('RATE_LIMITED', `Rate limit of ${ctx.max} requests a minute exceeded; retry in ${Math.ceil(ctx.ttl / 1000)} s`, { retryAfterSeconds: Math.ceil(ctx.ttl / 1000), limitPerMinute: ctx.max }), { statusCode: 429 }),
  });
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'flowise-billing', version: opts.version ?? '0.0.0', description: 'Operator API of flowise-billing: customers, credits, charges, holds, plans, invoices, rate cards, billing tokens, webhooks.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'An API key from `flowise-billing apikeys create`' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });

  // Authentication and scope, from the route's config.scope.
  app.addHook('preHandler', async (req) => {
    const need = req.routeOptions.config.scope;
    if (!need) return;
    const token = BEARER.exec(req.headers.authorization ?? '')?.[1];
    const key = await deps.apiKeys.verify(token);
    if (!allows(key.scope, need)) {
      throw new BillingError('FORBIDDEN', `This API key has scope "${key.scope}"; ${req.method} ${req.routeOptions.url} needs "${need}"`, { scope: key.scope, required: need });
    }
    req.apiKey = key;
  });
  app.addHook('onResponse', async (req, reply) => {
    deps.metrics.requests.inc({ route: req.routeOptions.url ?? 'unknown', method: req.method, status: String(reply.statusCode) });
  });

  app.get('/healthz', { schema: { hide: true } }, async (_req, reply) => {
    try {
      await deps.ledger.dialect.read((c) => c.query('SELECT 1 AS ok'));
      return { ok: true, backend: deps.ledger.backend };
    } catch {
      return reply.code(503).send(errorBody(new BillingError('DATABASE_ERROR', 'The ledger database is not reachable', { backend: deps.ledger.backend })));
    }
  });

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    const [w, s] = await Promise.all([deps.webhooks.deliveryCounts(), stripeStatus(deps.ledger)]);
    deps.metrics.webhookPending.set(w.pending);
    deps.metrics.webhookPaused.set(w.paused);
    deps.metrics.webhookFailed.set(w.failed);
    deps.metrics.webhookLag.set(w.oldestPendingMs / 1000);
    deps.metrics.stripePending.set(s.pending);
    deps.metrics.stripeLag.set(s.oldestPendingAt ? Math.max(0, (Date.now() - Date.parse(s.oldestPendingAt)) / 1000) : 0);
    deps.metrics.invoiceItemsPending.set(s.invoiceItems.pending);
    deps.metrics.invoiceItemsFailed.set(s.invoiceItems.failed);
    return reply.header('content-type', deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics());
  });

  app.register(async (api) => {
    customerRoutes(api, deps);
    moneyRoutes(api, deps);
    planRoutes(api, deps);
    adminRoutes(api, deps);
  });
  app.register(async (ui) => dashboardRoutes(ui, deps, { secureCookies: opts.secureCookies ?? false }));

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  await app.ready();
  return app;
}

