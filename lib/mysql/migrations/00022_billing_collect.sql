-- +goose Up
-- jobs billing collect: usage read from CloudStack's usage server (listUsageRecords).

-- Every record collect has read, once: the audit trail and the replay source. A record
-- is keyed by its natural identity (usage id, usage type, offering, start, end,
-- account), stored as identity = SHA-256 over those six values so the key stays short;
-- the columns beside it say what it hashes. content_hash covers the values billing
-- uses (raw usage, size, account name, VM): the same record read again changes
-- nothing, a record whose content changed is an update.
CREATE TABLE cloudstack_usage (
  id            BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  identity      BINARY(32)    NOT NULL,
  usage_id      VARCHAR(64)   CHARACTER SET ascii NOT NULL,
  usage_type    INT           NOT NULL,
  offering_id   VARCHAR(64)   CHARACTER SET ascii NOT NULL DEFAULT '',
  start_date    DATETIME      NOT NULL COMMENT 'UTC, as the usage server wrote it',
  end_date      DATETIME      NOT NULL COMMENT 'UTC, inclusive (CloudStack writes hh:59:59)',
  cs_account_id VARCHAR(64)   CHARACTER SET ascii NOT NULL COMMENT 'CloudStack account uuid',
  content_hash  BINARY(32)    NOT NULL,
  account_name  VARCHAR(255)  NOT NULL DEFAULT '',
  domain_id     VARCHAR(64)   CHARACTER SET ascii NOT NULL DEFAULT '',
  vm_id         VARCHAR(64)   CHARACTER SET ascii NOT NULL DEFAULT '',
  raw_usage     VARCHAR(64)   NOT NULL COMMENT 'rawusage exactly as listed',
  size          BIGINT        NOT NULL DEFAULT 0 COMMENT 'bytes',
  description   VARCHAR(512)  NOT NULL DEFAULT '',
  -- What collect made of it: collected into usage_records, ignored by the product
  -- mapping, or pending a problem (unknown_account, unknown_usage_type,
  -- unmapped_offering...) that the first run after it is fixed resolves.
  status        ENUM('collected','ignored','pending') NOT NULL,
  problem       VARCHAR(32)   NULL,
  account_id    BIGINT        NULL,
  product       VARCHAR(64)   NULL,
  hour          DATETIME      NULL COMMENT 'the start hour usage_records carries it on',
  quantity      DECIMAL(20,6) NULL,
  -- Extra copies of the record the usage server listed in one read (its known
  -- duplicates after a stuck job): counted and reported, never billed.
  duplicates    INT           NOT NULL DEFAULT 0,
  first_seen_at DATETIME(6)   NOT NULL,
  changed_at    DATETIME(6)   NOT NULL,
  UNIQUE KEY cloudstack_usage_identity (identity),
  -- Summing a usage_records row: the raw records of one (resource, product, hour).
  KEY cloudstack_usage_key (usage_id, product, hour),
  -- Each run retries the pending records.
  KEY cloudstack_usage_pending (status, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- How far collect's input is complete: coverage is the end of the latest period the
-- usage server has finished (its last successful job, or records seen up to there).
-- Close does not invoice a month before coverage has passed the month's end.
CREATE TABLE usage_collect_state (
  name       VARCHAR(32) NOT NULL PRIMARY KEY,
  coverage   DATETIME    NULL,
  read_to    DATETIME    NULL COMMENT 'end of the last window read completely',
  updated_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Collect maps a record's accountid to our account.
ALTER TABLE accounts ADD KEY accounts_cloudstack (cloudstack_account_id);

-- +goose Down
ALTER TABLE accounts DROP KEY accounts_cloudstack;
DROP TABLE usage_collect_state;
DROP TABLE cloudstack_usage;
