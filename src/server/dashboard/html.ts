/**
 * The dashboard's HTML: a handful of server-rendered pages with one small
 * stylesheet and inline SVG charts; no scripts, no design system. Every
 * interpolated value goes through esc().
 */
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text;
  }
}

function esc(v: unknown): string {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Tagged template: values are escaped unless they are Html (or arrays of Html). */
export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!;
  values.forEach((v, i) => {
    const part = v instanceof Html ? v.text : Array.isArray(v) ? v.map((x) => (x instanceof Html ? x.text : esc(x))).join('') : esc(v);
    out += part + strings[i + 1]!;
  });
  return new Html(out);
}

const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header form{margin-left:auto}
main{max-width:1180px;margin:0 auto;padding:16px 24px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e7}
th,td{padding:6px 10px;border-bottom:1px solid #eceef2;text-align:left;white-space:nowrap}
th{background:#f0f2f5;font-weight:600;font-size:12px;text-transform:uppercase;color:#566}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:120px;height:10px;background:#e6e9ee;border-radius:5px;vertical-align:middle;overflow:hidden}
.bar i{display:block;height:100%;background:#3b7ddd}.bar i.warn{background:#e0a100}.bar i.full{background:#d9534f}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e7;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:18px}.muted{color:#778}.neg{color:#b52b27}.pos{color:#1b7f3b}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media(max-width:900px){.grid{grid-template-columns:1fr}}
form.login{background:#fff;border:1px solid #dde1e7;padding:20px;max-width:420px;margin:60px auto}
input[type=password]{width:100%;padding:8px;margin:8px 0 12px;box-sizing:border-box}button{padding:6px 14px}
.err{color:#b52b27}`;

export function page(title: string, body: Html, opts: { signedIn: boolean }): string {
  return html`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${title} · flowise-billing</title><style>${new Html(STYLE)}</style></head><body>
<header><a href="/">flowise-billing</a>${opts.signedIn ? html`<a href="/">Customers</a><form method="post" action="/logout"><button type="submit">Sign out</button></form>` : ''}</header>
<main>${body}</main></body></html>`.text;
}

/** A usage bar: blue below 75 %, amber from 75 %, red at 100 %. */
export function usageBar(pct: number, label: string): Html {
  const w = Math.max(0, Math.min(100, pct));
  const cls = pct >= 100 ? 'full' : pct >= 75 ? 'warn' : '';
  return html`<span class="bar" title="${label}"><i class="${cls}" style="width:${w.toFixed(1)}%"></i></span> <span class="muted">${label}</span>`;
}

/**
 * Horizontal bar chart as inline SVG. Values are exact USD strings; bar
 * lengths only need proportions, so they are computed from nano-USD bigints
 * scaled to 0–1000 without a float ever touching money.
 */
export function barChart(title: string, rows: ReadonlyArray<{ label: string; nanos: bigint; text: string }>): Html {
  if (rows.length === 0) return html`<p class="muted">No ${title.toLowerCase()} in this period.</p>`;
  const max = rows.reduce((m, r) => (r.nanos > m ? r.nanos : m), 1n);
  const rowH = 24;
  const w = 520;
  const labelW = 190;
  const barW = w - labelW - 90;
  const bars = rows.map((r, i) => {
    const len = Number((r.nanos * 1000n) / max) / 1000 * barW;
    const y = i * rowH;
    return html`<g><text x="0" y="${y + 16}" font-size="12">${r.label.length > 28 ? `${r.label.slice(0, 27)}…` : r.label}</text><rect x="${labelW}" y="${y + 5}" width="${Math.max(1, len).toFixed(1)}" height="14" fill="#3b7ddd"></rect><text x="${labelW + len + 6}" y="${y + 16}" font-size="12">${r.text}</text></g>`;
  });
  return html`<svg role="img" aria-label="${title}" width="${w}" height="${rows.length * rowH + 4}" viewBox="0 0 ${w} ${rows.length * rowH + 4}">${bars}</svg>`;
}
