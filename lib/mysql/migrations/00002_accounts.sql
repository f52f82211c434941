-- +goose Up
-- Customer accounts, written by the signup service; every job reads them. The first
-- columns are the metering contract; the rest have defaults so writers that only
-- know the contract keep working.
CREATE TABLE accounts (
  id                     BIGINT       NOT NULL PRIMARY KEY,
  email                  VARCHAR(255) NOT NULL,
  currency               CHAR(3)      NOT NULL,
  created_at             DATETIME     NOT NULL,
  status                 VARCHAR(16)  NOT NULL DEFAULT 'active' COMMENT 'active, suspended, terminated',
  stripe_customer_id     VARCHAR(64)  NULL,
  name                   VARCHAR(255) NOT NULL DEFAULT '',
  time_zone              VARCHAR(64)  NOT NULL DEFAULT 'UTC' COMMENT 'IANA zone, for send windows',
  signup_ip              VARCHAR(45)  NULL,
  email_verified         TINYINT(1)   NOT NULL DEFAULT 0,
  payment_method_verified TINYINT(1)  NOT NULL DEFAULT 0,
  cloudstack_account_id  VARCHAR(64)  NULL COMMENT 'the account in the orchestrator',
  KEY accounts_created (created_at),
  KEY accounts_signup_ip (signup_ip, created_at),
  KEY accounts_stripe (stripe_customer_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE accounts;
