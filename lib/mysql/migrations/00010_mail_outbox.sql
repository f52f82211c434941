-- +goose Up
-- Outgoing email (lib/mail). A job inserts the row in the transaction that changes the
-- state the mail announces; the unique dedupe_key (one per case/account and step)
-- makes a rerun or a crash unable to queue a step twice. Delivery claims a row
-- (queued -> sending) before sending, so a message is sent at most once; a row left
-- in 'sending' is for an operator. All DATETIMEs are UTC.
CREATE TABLE mail_outbox (
  id                      BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  dedupe_key              VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL
                          COMMENT 'business step, e.g. dunning:case:42:reminded',
  sender                  VARCHAR(320) NOT NULL DEFAULT '' COMMENT 'From; empty = SMTP config default',
  recipient               VARCHAR(320) NOT NULL,
  subject                 VARCHAR(998) NOT NULL,
  body_text               MEDIUMTEXT   NOT NULL,
  body_html               MEDIUMTEXT   NOT NULL,
  headers                 JSON         NULL COMMENT 'extra headers, name -> value',
  list_unsubscribe_url    VARCHAR(2048) NOT NULL DEFAULT '' COMMENT 'RFC 8058 one-click https URL',
  list_unsubscribe_mailto VARCHAR(320) NOT NULL DEFAULT '',
  message_id              VARCHAR(255) NOT NULL DEFAULT '' COMMENT 'without angle brackets',
  status                  ENUM('queued','sending','sent','failed','suppressed') NOT NULL DEFAULT 'queued',
  attempts                INT          NOT NULL DEFAULT 0,
  next_attempt_at         DATETIME(6)  NOT NULL,
  claimed_at              DATETIME(6)  NULL,
  sent_at                 DATETIME(6)  NULL,
  last_error              TEXT         NULL,
  created_at              DATETIME(6)  NOT NULL,
  UNIQUE KEY mail_outbox_dedupe_key (dedupe_key),
  KEY mail_outbox_status_next (status, next_attempt_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Addresses that must not receive campaign or notice mail: unsubscribed (RFC 8058
-- one-click), hard-bounced or complained. Stored lower-cased.
CREATE TABLE mail_suppressions (
  email      VARCHAR(320) NOT NULL PRIMARY KEY,
  reason     VARCHAR(255) NOT NULL DEFAULT '',
  created_at DATETIME(6)  NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE mail_suppressions;
DROP TABLE mail_outbox;
