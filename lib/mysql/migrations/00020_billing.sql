-- +goose Up
-- Metering input (written by metering agents; keep these names) and billing's own
-- state. Money is DECIMAL, rounded to the currency's minor unit once, on the invoice.

CREATE TABLE usage_records (
  id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id  BIGINT        NOT NULL,
  resource_id VARCHAR(64)   NOT NULL,
  product     VARCHAR(64)   NOT NULL,
  hour        DATETIME      NOT NULL COMMENT 'UTC, on the hour',
  quantity    DECIMAL(20,6) NOT NULL,
  -- Set on insert and on correction: how billing finds usage that arrived (or was
  -- fixed) after its hour was rated.
  recorded_at DATETIME(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  UNIQUE KEY usage_resource_product_hour (resource_id, product, hour),
  -- Covering index for the hourly aggregation: rating reads only the index.
  KEY usage_hour (hour, account_id, product, quantity),
  KEY usage_recorded (recorded_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE prices (
  id         BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  product    VARCHAR(64)   NOT NULL,
  currency   CHAR(3)       NOT NULL,
  unit_price DECIMAL(20,8) NOT NULL,
  valid_from DATETIME      NOT NULL,
  valid_to   DATETIME      NULL COMMENT 'exclusive; NULL: still valid',
  KEY prices_lookup (product, currency, valid_from)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE credits (
  id         BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id BIGINT        NOT NULL,
  amount     DECIMAL(20,6) NOT NULL,
  currency   CHAR(3)       NOT NULL,
  reason     VARCHAR(64)   NOT NULL COMMENT 'trial, goodwill, ...',
  granted_at DATETIME      NOT NULL,
  expires_at DATETIME      NULL,
  KEY credits_account (account_id, expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per account, product and hour. status 'unrated' keeps usage that could not
-- be priced (unknown account or product, negative quantity) visible until fixed.
CREATE TABLE charges (
  id         BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id BIGINT        NOT NULL,
  product    VARCHAR(64)   NOT NULL,
  hour       DATETIME      NOT NULL,
  quantity   DECIMAL(20,6) NOT NULL,
  unit_price DECIMAL(20,8) NULL,
  amount     DECIMAL(20,6) NULL,
  currency   CHAR(3)       NULL,
  status     ENUM('rated','unrated') NOT NULL DEFAULT 'rated',
  problem    VARCHAR(32)   NULL COMMENT 'unknown_account, unpriced, negative_quantity',
  invoice_id BIGINT        NULL,
  rated_at   DATETIME(6)   NOT NULL,
  UNIQUE KEY charges_account_product_hour (account_id, product, hour),
  KEY charges_hour (hour),
  KEY charges_unrated (status, hour),
  KEY charges_invoice (invoice_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Billing's progress, one row per name ('rating'): the last hour rated and where the
-- next scan for late usage starts.
CREATE TABLE billing_state (
  name          VARCHAR(32) NOT NULL PRIMARY KEY,
  hour_watermark DATETIME   NULL,
  late_scan_from DATETIME(6) NULL,
  updated_at    DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE invoices (
  id              BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id      BIGINT        NOT NULL,
  period_start    DATE          NOT NULL COMMENT 'first day of the month billed',
  currency        CHAR(3)       NOT NULL,
  subtotal        DECIMAL(20,6) NOT NULL,
  credit_applied  DECIMAL(20,6) NOT NULL DEFAULT 0,
  total_minor     BIGINT        NOT NULL COMMENT 'amount due in minor units, rounded once',
  amount_paid_minor BIGINT      NOT NULL DEFAULT 0,
  status          ENUM('draft','open','paid','void','uncollectible') NOT NULL,
  created_at      DATETIME(6)   NOT NULL,
  opened_at       DATETIME(6)   NULL,
  due_at          DATETIME(6)   NULL,
  paid_at         DATETIME(6)   NULL,
  -- Charging: the schedule of attempts and where it stands.
  attempt_count   INT           NOT NULL DEFAULT 0,
  next_attempt_at DATETIME(6)   NULL,
  collection      ENUM('pending','retrying','hard_declined','exhausted','no_payment_method','succeeded') NOT NULL DEFAULT 'pending',
  last_decline_code VARCHAR(64) NULL,
  UNIQUE KEY invoices_account_period (account_id, period_start),
  KEY invoices_status_due (status, due_at),
  KEY invoices_next_attempt (status, next_attempt_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE invoice_lines (
  id         BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  invoice_id BIGINT        NOT NULL,
  kind       ENUM('usage','credit') NOT NULL,
  product    VARCHAR(64)   NOT NULL COMMENT 'product, or credit:<id> for a credit line',
  quantity   DECIMAL(20,6) NOT NULL,
  amount     DECIMAL(20,6) NOT NULL COMMENT 'negative for credit',
  UNIQUE KEY invoice_lines_product (invoice_id, kind, product)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Credit consumed by invoices; a credit's remainder is amount minus what is here.
CREATE TABLE credit_applications (
  credit_id  BIGINT        NOT NULL,
  invoice_id BIGINT        NOT NULL,
  amount     DECIMAL(20,6) NOT NULL,
  PRIMARY KEY (credit_id, invoice_id),
  KEY credit_applications_invoice (invoice_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per charge attempt, written before the provider is called, so a crash
-- between its answer and our commit is replayed with the same idempotency key.
CREATE TABLE payments (
  id                  BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  invoice_id          BIGINT       NOT NULL,
  account_id          BIGINT       NOT NULL,
  attempt             INT          NOT NULL,
  idempotency_key     VARCHAR(255) NOT NULL,
  amount_minor        BIGINT       NOT NULL,
  currency            CHAR(3)      NOT NULL,
  status              ENUM('pending','succeeded','soft_declined','hard_declined') NOT NULL,
  provider_payment_id VARCHAR(255) NULL,
  decline_code        VARCHAR(64)  NULL,
  created_at          DATETIME(6)  NOT NULL,
  updated_at          DATETIME(6)  NOT NULL,
  UNIQUE KEY payments_attempt (invoice_id, attempt),
  UNIQUE KEY payments_idempotency (idempotency_key),
  KEY payments_status (status)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE payments;
DROP TABLE credit_applications;
DROP TABLE invoice_lines;
DROP TABLE invoices;
DROP TABLE billing_state;
DROP TABLE charges;
DROP TABLE credits;
DROP TABLE prices;
DROP TABLE usage_records;
