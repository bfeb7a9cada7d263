import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { BillingError } from '../../errors';
import type { Entry } from '../../ledger/types';
import { formatUsd } from '../../money';
import { INVOICE_CHARGE_TYPE } from '../../quota/collect';
import { collectionsOf, type ExternalItem } from '../../quota/collect';
import { stripeStatus } from '../../stripe/cli';
import { stripeInvoiceItems } from '../../stripe/invoice-items';
import type { ApiKey } from '../apikeys';
import { BEARER } from '../apikeys';
import type { ServerDeps } from '../context';
import { barChart, html, type Html, page, usageBar } from './html';
import { CUSTOMER_ID_PATTERN } from '../../schemas';

const COOKIE = 'fb_key';
const PAGE_SIZE = 50;
/** The sign-in form carries one API key (well under 100 bytes); `serve --body-limit` does not apply to it. */
const FORM_BODY_LIMIT = 4096;

const usd = (n: bigint) => (n < 0n ? `−$${formatUsd(-n)}` : `$${formatUsd(n)}`);

/**
 * The operator dashboard: a login form that keeps a read (or higher) API key
 * in an HttpOnly, SameSite=Strict cookie, a customer list and a customer
 * page. Read-only: every change goes through the API or the CLI.
 */
export function dashboardRoutes(ui: FastifyInstance, deps: ServerDeps, opts: { secureCookies: boolean }): void {
  ui.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_BODY_LIMIT }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });

  async function viewer(req: FastifyRequest): Promise<ApiKey | null> {
    const token = BEARER.exec(req.headers.authorization ?? '')?.[1] ?? req.cookies[COOKIE];
    if (!token) return null;
    try {
      return await deps.apiKeys.verify(token);
    } catch {
      return null;
    }
  }

  const send = (reply: FastifyReply, status: number, text: string) =>
    reply.code(status).header('content-type', 'text/html; charset=utf-8').header('cache-control', 'no-store').header('x-frame-options', 'DENY').send(text);

  const loginPage = (message?: string) =>
    page('Sign in', html`<form class="login" method="post" action="/login"><h1>Sign in</h1>
<p class="muted">Paste an API key (scope read or higher) from <code>flowise-billing apikeys create --scope read</code>.</p>
${message ? html`<p class="err">${message}</p>` : ''}
<label>API key<input type="password" name="key" autocomplete="off" required></label><button type="submit">Sign in</button></form>`, { signedIn: false });

  // An oversized sign-in form: the server-wide handler would name `serve --body-limit` (64 KiB) as the limit
  // of a 5 KB form it refused; anything else goes on to that handler.
  ui.setErrorHandler((err, _req, reply) => {
    if ((err as { code?: string }).code !== 'FST_ERR_CTP_BODY_TOO_LARGE') throw err;
    deps.metrics.refusals.inc({ code: 'VALIDATION_ERROR' });
    return send(reply, 413, loginPage(`That is not an API key: the sign-in form takes at most ${FORM_BODY_LIMIT} bytes.`));
  });

  ui.post('/login', async (req, reply) => {
    const key = String((req.body as Record<string, unknown> | undefined)?.key ?? '').trim();
    try {
      await deps.apiKeys.verify(key);
    } catch {
      return send(reply, 401, loginPage('That key is not valid (or was revoked).'));
    }
    reply.setCookie(COOKIE, key, { httpOnly: true, sameSite: 'strict', secure: opts.secureCookies, path: '/', maxAge: 12 * 3600 });
    return reply.redirect('/', 303);
  });

  ui.post('/logout', async (_req, reply) => {
    reply.clearCookie(COOKIE, { path: '/' });
    return reply.redirect('/', 303);
  });

  ui.get('/', async (req, reply) => {
    if (!(await viewer(req))) return send(reply, 200, loginPage());
    const after = typeof (req.query as Record<string, unknown>).after === 'string' ? String((req.query as Record<string, string>).after) : '';
    // A bad cursor (not a customer id) shows the first page rather than an error page.
    const cursor = after && CUSTOMER_ID_PATTERN.test(after) ? after : undefined;
    const [found, total] = await Promise.all([deps.ledger.listCustomers({ limit: PAGE_SIZE + 1, after: cursor }), deps.ledger.countCustomers()]);
    const slice = found.slice(0, PAGE_SIZE);
    const rows = await Promise.all(
      slice.map(async (c) => {
        const [b, u] = await Promise.all([deps.ledger.balance(c.id), deps.quota.usage(c.id)]);
        return html`<tr><td><a href="/customers/${encodeURIComponent(c.id)}">${c.id}</a></td><td>${c.name ?? ''}</td>
<td class="num">${usd(b.balance)}</td><td class="num">${usd(b.available)}</td><td>${u.tier}${u.status === 'active' ? '' : ` (${u.status})`}</td>
<td>${usageBar(u.usagePercentage, u.sessionsLimit === null ? `${u.sessionsUsed} sessions` : `${u.sessionsUsed} / ${u.sessionsLimit} sessions`)}</td></tr>`;
      }),
    );
    const [stripe, hooks] = await Promise.all([stripeStatus(deps.ledger), deps.webhooks.deliveryCounts()]);
    const next = found.length > PAGE_SIZE ? slice[slice.length - 1]!.id : null;
    const body = html`<h1>Customers <span class="muted">(${total})</span></h1>
<table><thead><tr><th>customer</th><th>name</th><th class="num">balance</th><th class="num">available</th><th>plan</th><th>sessions this period</th></tr></thead>
<tbody>${rows}</tbody></table>${next ? html`<p><a href="/?after=${encodeURIComponent(next)}">Next page →</a></p>` : ''}
<h2>Sync status</h2><div class="cards">
<div class="card" id="stripe-status"><span class="muted">Stripe meter events</span><b>${stripe.pending} pending</b>${stripe.delivered} delivered · <span class="${stripe.failed ? 'neg' : ''}">${stripe.failed} failed</span>${stripe.oldestPendingAt ? html`<br><span class="muted">oldest pending ${stripe.oldestPendingAt}</span>` : ''}</div>
<div class="card" id="stripe-invoice-items"><span class="muted">Stripe invoice items</span><b>${stripe.invoiceItems.pending} pending</b>${stripe.invoiceItems.delivered} delivered · <span class="${stripe.invoiceItems.failed ? 'neg' : ''}">${stripe.invoiceItems.failed} failed</span></div>
<div class="card" id="webhook-status"><span class="muted">Outbound webhooks</span><b>${hooks.pending} pending</b>${hooks.delivered} delivered · <span class="${hooks.failed ? 'neg' : ''}">${hooks.failed} failed</span>${hooks.paused ? html`<br><span class="muted">${hooks.paused} held by disabled endpoints</span>` : ''}</div>
</div>`;
    return send(reply, 200, page('Customers', body, { signedIn: true }));
  });

  ui.get('/customers/:customerId', async (req, reply) => {
    if (!(await viewer(req))) return reply.redirect('/', 303);
    const id = (req.params as { customerId: string }).customerId;
    if (!CUSTOMER_ID_PATTERN.test(id)) return send(reply, 400, page('Bad request', html`<p class="err">Not a customer id.</p>`, { signedIn: true }));
    try {
      return send(reply, 200, page(id, await customerPage(deps, id), { signedIn: true }));
    } catch (e) {
      if (e instanceof BillingError && e.code === 'CUSTOMER_NOT_FOUND') return send(reply, 404, page('Not found', html`<p class="err">${e.message}</p>`, { signedIn: true }));
      throw e;
    }
  });
}

function groupSum(entries: readonly { key: string; nanos: bigint }[]): Array<{ label: string; nanos: bigint; text: string }> {
  const m = new Map<string, bigint>();
  for (const e of entries) m.set(e.key, (m.get(e.key) ?? 0n) + e.nanos);
  return [...m].filter(([, v]) => v > 0n).sort((a, b) => (b[1] > a[1] ? 1 : b[1] < a[1] ? -1 : 0)).map(([label, nanos]) => ({ label, nanos, text: usd(nanos) }));
}

async function customerPage(deps: ServerDeps, id: string): Promise<Html> {
  const c = await deps.ledger.getCustomer(id);
  const [b, u, invoices, events, collections] = await Promise.all([
    deps.ledger.balance(id), deps.quota.usage(id), deps.quota.invoices(id), deps.webhooks.listEvents({ customerId: id, limit: 20 }), collectionsOf(deps.quota, id, stripeInvoiceItems()),
  ]);
  const from = Date.parse(u.periodStart);
  const to = Date.parse(u.periodEnd);
  const entries = await deps.ledger.statement(id, { limit: 10_000 });
  // Usage only: an invoice collection is the previous period's bill, shown on the statement, not in the charts.
  const inPeriod = entries.filter(
    (e) => e.createdAt >= u.periodStart && e.createdAt < u.periodEnd && (e.type === 'settle' || e.type === 'charge' || e.type === 'refund') && e.chargeType !== INVOICE_CHARGE_TYPE,
  );
  const byType = groupSum(inPeriod.map((e) => ({ key: e.chargeType ?? (e.type === 'refund' ? 'refunds' : 'other'), nanos: -e.amount })));
  // Flow and node come from the charge's metadata (set by the Flowise nodes); the latest 300 charges are looked up.
  const chargeIds = [...new Set(inPeriod.filter((e) => e.chargeId && e.type !== 'refund').map((e) => e.chargeId!))].slice(-300);
  const charges = await Promise.all(chargeIds.map((cid) => deps.ledger.getCharge(cid)));
  const byFlow = groupSum(
    charges.map((ch) => {
      const m = ch.metadata as Record<string, unknown>;
      const flow = String(m.chatflowId ?? m.usageCategory ?? m.source ?? 'other');
      const node = m.nodeId ?? m.costCenter ?? m.kind;
      return { key: node ? `${flow} / ${String(node)}` : flow, nanos: ch.amount - ch.refunded };
    }),
  );
  const recent = entries.slice(-50).reverse();
  const entryRow = (e: Entry) =>
    html`<tr><td>${e.seq}</td><td>${e.createdAt.replace('T', ' ').slice(0, 19)}</td><td>${e.type}</td><td>${e.chargeType ?? ''}</td><td>${e.quantity ?? ''}</td>
<td class="num ${e.amount < 0n ? 'neg' : e.amount > 0n ? 'pos' : ''}">${e.amount === 0n ? '' : usd(e.amount)}</td><td class="num">${usd(e.balanceAfter)}</td><td class="muted">${e.memo ?? ''}</td></tr>`;
  return html`<h1>${c.id} <span class="muted">${c.name ?? ''}</span></h1>
<div class="cards">
<div class="card"><span class="muted">balance</span><b>${usd(b.balance)}</b></div>
<div class="card"><span class="muted">available</span><b>${usd(b.available)}</b>held ${usd(b.held)}</div>
<div class="card"><span class="muted">plan</span><b>${u.tier}</b>${u.status}</div>
<div class="card"><span class="muted">sessions</span><b>${u.sessionsUsed}${u.sessionsLimit === null ? '' : ` / ${u.sessionsLimit}`}</b>${usageBar(u.usagePercentage, `${u.usagePercentage}%`)}</div>
<div class="card"><span class="muted">this period</span><b>${usd(u.currentCharges)}</b>base ${usd(u.base)} · overage ${usd(u.overage)}</div>
<div class="card"><span class="muted">budget</span><b>${u.budget === null ? 'none' : usd(u.budget)}</b>used ${usd(u.budgetUsed)}</div>
</div>
<p class="muted">Period ${new Date(from).toISOString().slice(0, 10)} → ${new Date(to).toISOString().slice(0, 10)}</p>
<div class="grid"><section><h2>Usage by ChargeType</h2>${barChart('Usage by ChargeType', byType)}</section>
<section><h2>Usage by flow / node</h2>${barChart('Usage by flow and node', byFlow)}</section></div>
<h2>Statement <span class="muted">(latest 50)</span></h2>
<table id="statement"><thead><tr><th>#</th><th>time (UTC)</th><th>type</th><th>ChargeType</th><th>qty</th><th class="num">amount</th><th class="num">balance</th><th>memo</th></tr></thead><tbody>${recent.map(entryRow)}</tbody></table>
<div class="grid"><section><h2>Alerts</h2>${u.alerts.length === 0 ? html`<p class="muted">None this period.</p>` : html`<table><thead><tr><th>kind</th><th class="num">threshold</th><th class="num">value</th><th>fired</th></tr></thead><tbody>${u.alerts.map((a) => html`<tr><td>${a.kind}</td><td class="num">${a.threshold}%</td><td class="num">${a.value}%</td><td>${a.firedAt.slice(0, 19)}</td></tr>`)}</tbody></table>`}</section>
<section><h2>Invoices</h2>${invoices.length === 0 ? html`<p class="muted">No closed invoices.</p>` : html`<table><thead><tr><th>invoice</th><th>period</th><th>plan</th><th class="num">total</th><th>collected</th></tr></thead><tbody>${invoices.map((i) => html`<tr><td>${i.id ?? ''}</td><td>${i.periodStart.slice(0, 10)}</td><td>${i.planId}</td><td class="num">${usd(i.total)}</td><td>${collectionCell(collections.get(i.periodStart))}</td></tr>`)}</tbody></table>`}</section></div>
<h2>Recent events</h2>${events.length === 0 ? html`<p class="muted">No webhook events.</p>` : html`<table><thead><tr><th>event</th><th>type</th><th>time</th></tr></thead><tbody>${events.map((e) => html`<tr><td>${e.id}</td><td>${e.type}</td><td>${e.createdAt.slice(0, 19)}</td></tr>`)}</tbody></table>`}`;
}

/** How a closed invoice is collected: credits (on the statement) or Stripe invoice items with their delivery status. */
function collectionCell(c: { method: string; items?: readonly ExternalItem[] } | undefined): Html | string {
  if (!c) return html`<span class="muted">not yet</span>`;
  if (c.method === 'credits') return 'credits (statement)';
  return html`Stripe: ${(c.items ?? []).map((i) => html`<span class="${i.status === 'failed' ? 'neg' : ''}">${i.kind} ${usd(i.amount)} ${i.status}</span> `)}`;
}
