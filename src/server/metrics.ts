import { Counter, Gauge, Histogram, Registry } from 'prom-client';

/** The serve process's Prometheus metrics, on their own registry (no global state across instances). */
export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'flowise_billing_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'], registers: [this.registry] });
  readonly operations = new Counter({ name: 'flowise_billing_operations_total', help: 'API operations by name and outcome (ok or the error code)', labelNames: ['operation', 'outcome'], registers: [this.registry] });
  readonly refusals = new Counter({ name: 'flowise_billing_refusals_total', help: 'Refused operations by error code', labelNames: ['code'], registers: [this.registry] });
  readonly ledgerLatency = new Histogram({
    name: 'flowise_billing_ledger_seconds',
    help: 'Latency of ledger calls made by the API, by operation',
    labelNames: ['operation'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly webhookPending = new Gauge({ name: 'flowise_billing_webhook_outbox_pending', help: 'Webhook deliveries not yet delivered, to enabled endpoints', registers: [this.registry] });
  readonly webhookPaused = new Gauge({ name: 'flowise_billing_webhook_outbox_paused', help: 'Webhook deliveries held by disabled endpoints (sent once re-enabled)', registers: [this.registry] });
  readonly webhookFailed = new Gauge({ name: 'flowise_billing_webhook_outbox_failed', help: 'Webhook deliveries given up on', registers: [this.registry] });
  readonly webhookLag = new Gauge({ name: 'flowise_billing_webhook_outbox_lag_seconds', help: 'Age of the oldest undelivered webhook delivery to an enabled endpoint', registers: [this.registry] });
  readonly stripePending = new Gauge({ name: 'flowise_billing_stripe_outbox_pending', help: 'Stripe meter events not yet delivered', registers: [this.registry] });
  readonly stripeLag = new Gauge({ name: 'flowise_billing_stripe_outbox_lag_seconds', help: 'Age of the oldest undelivered Stripe meter event', registers: [this.registry] });
  readonly invoiceItemsPending = new Gauge({ name: 'flowise_billing_stripe_invoice_items_pending', help: 'Stripe invoice items (closed invoices) not yet delivered', registers: [this.registry] });
  readonly invoiceItemsFailed = new Gauge({ name: 'flowise_billing_stripe_invoice_items_failed', help: 'Stripe invoice items given up on (stripe retry-failed requeues)', registers: [this.registry] });

  /** Times a ledger call and counts its outcome. */
  async time<T>(operation: string, fn: () => Promise<T>): Promise<T> {
    const end = this.ledgerLatency.startTimer({ operation });
    try {
      const v = await fn();
      this.operations.inc({ operation, outcome: 'ok' });
      return v;
    } catch (e) {
      const code = (e as { code?: string }).code ?? 'INTERNAL_ERROR';
      this.operations.inc({ operation, outcome: code });
      throw e;
    } finally {
      end();
    }
  }
}
