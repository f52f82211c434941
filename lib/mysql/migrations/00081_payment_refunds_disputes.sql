-- +goose Up
-- Refunds and disputes get a local home, so that a refund issued in Stripe's
-- dashboard can be recorded (jobs reconcile --fix, or by hand) and the per-currency
-- drift compares like with like: money taken minus money given back, on both sides.
-- Rows are keyed by the provider's id, so recording one twice changes nothing.
CREATE TABLE payment_refunds (
  id                  BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  provider_refund_id  VARCHAR(255) NOT NULL,
  provider_payment_id VARCHAR(255) NOT NULL COMMENT 'the refunded PaymentIntent (payments.provider_payment_id)',
  invoice_id          BIGINT       NOT NULL,
  account_id          BIGINT       NULL,
  amount_minor        BIGINT       NOT NULL,
  currency            CHAR(3)      NOT NULL,
  status              ENUM('pending','succeeded','failed','canceled','requires_action') NOT NULL,
  reason              VARCHAR(64)  NULL,
  refunded_at         DATETIME(6)  NOT NULL COMMENT 'when the provider created it',
  recorded_at         DATETIME(6)  NOT NULL,
  updated_at          DATETIME(6)  NOT NULL,
  recorded_by         VARCHAR(255) NOT NULL COMMENT 'cronkit (a run), or operator:<name>',
  run_id              VARCHAR(32)  NULL,
  UNIQUE KEY payment_refunds_provider (provider_refund_id),
  KEY payment_refunds_invoice (invoice_id),
  KEY payment_refunds_payment (provider_payment_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE payment_disputes (
  id                  BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  provider_dispute_id VARCHAR(255) NOT NULL,
  provider_payment_id VARCHAR(255) NOT NULL,
  invoice_id          BIGINT       NOT NULL,
  account_id          BIGINT       NULL,
  amount_minor        BIGINT       NOT NULL,
  currency            CHAR(3)      NOT NULL,
  status              VARCHAR(32)  NOT NULL COMMENT 'needs_response, under_review, won, lost, ... (Stripe''s)',
  reason              VARCHAR(64)  NULL,
  evidence_due_by     DATETIME(6)  NULL,
  disputed_at         DATETIME(6)  NOT NULL COMMENT 'when the provider created it',
  recorded_at         DATETIME(6)  NOT NULL,
  updated_at          DATETIME(6)  NOT NULL,
  recorded_by         VARCHAR(255) NOT NULL,
  run_id              VARCHAR(32)  NULL,
  UNIQUE KEY payment_disputes_provider (provider_dispute_id),
  KEY payment_disputes_invoice (invoice_id),
  KEY payment_disputes_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Reconciliation reads billing's payments by the day they were attempted and finds
-- one by its PaymentIntent; billing's own keys serve neither.
ALTER TABLE payments
  ADD KEY payments_created (created_at),
  ADD KEY payments_provider (provider_payment_id);

-- +goose Down
ALTER TABLE payments
  DROP KEY payments_provider,
  DROP KEY payments_created;
DROP TABLE payment_disputes;
DROP TABLE payment_refunds;
