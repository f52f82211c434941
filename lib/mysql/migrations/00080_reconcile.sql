-- +goose Up
-- jobs reconcile (versions 80-99): findings that behave like tickets. One row per
-- discrepancy, kept across runs by its fingerprint (the class and the ids on both
-- sides): the same problem seen on two nights is one finding whose last_seen moves.
-- A finding is open until a person acknowledges it (with a reason), it no longer
-- reproduces when its window is checked again (resolved, automatically) or --fix
-- repairs it (fixed). A resolved or fixed finding that reproduces opens again.
-- All DATETIMEs are UTC.
CREATE TABLE reconcile_findings (
  id               BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  class            VARCHAR(32)   NOT NULL COMMENT 'running_not_metered, paid_not_recorded, ... (jobs/reconcile)',
  fingerprint      VARCHAR(128)  CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  state            ENUM('open','acknowledged','resolved','fixed') NOT NULL,
  -- The ids on both sides, where they apply.
  account_id       BIGINT        NULL,
  invoice_id       BIGINT        NULL,
  resource_id      VARCHAR(255)  NULL COMMENT 'an orchestrator resource, or a Stripe refund or dispute',
  payment_intent   VARCHAR(255)  NULL,
  amount           VARCHAR(40)   NULL COMMENT 'exact decimal in currency, as the check wrote it',
  currency         CHAR(3)       NULL,
  detail           VARCHAR(2000) NOT NULL COMMENT 'one line, as the last run saw it',
  evidence         JSON          NOT NULL COMMENT 'what each side said, as the last run saw it',
  fixable          TINYINT(1)    NOT NULL DEFAULT 0 COMMENT 'jobs reconcile --fix may repair it',
  first_seen       DATETIME(6)   NOT NULL,
  last_seen        DATETIME(6)   NOT NULL,
  first_run_id     VARCHAR(32)   NOT NULL,
  last_run_id      VARCHAR(32)   NOT NULL,
  -- The window of the check that last saw it: a later check of a window that covers
  -- this one and does not see it again resolves it.
  window_from      DATETIME(6)   NOT NULL,
  window_to        DATETIME(6)   NOT NULL,
  state_changed_at DATETIME(6)   NOT NULL,
  acknowledged_by  VARCHAR(255)  NULL,
  acknowledged_at  DATETIME(6)   NULL,
  ack_reason       VARCHAR(2000) NULL,
  fixed_by         VARCHAR(255)  NULL,
  fixed_at         DATETIME(6)   NULL,
  fixed_run_id     VARCHAR(32)   NULL,
  fix_reason       VARCHAR(2000) NULL,
  resolved_at      DATETIME(6)   NULL,
  resolved_run_id  VARCHAR(32)   NULL,
  UNIQUE KEY reconcile_findings_fingerprint (fingerprint),
  KEY reconcile_findings_state (state, class, id),
  KEY reconcile_findings_scope (class, state, window_from, window_to),
  KEY reconcile_findings_invoice (invoice_id),
  KEY reconcile_findings_payment_intent (payment_intent)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The audit trail of every state change: who (the job, or operator:<name>), in which
-- run, why. Never updated or deleted (the triggers below refuse it).
CREATE TABLE reconcile_finding_events (
  id          BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  finding_id  BIGINT        NOT NULL,
  from_state  VARCHAR(16)   NULL COMMENT 'NULL when the finding opened',
  to_state    VARCHAR(16)   NOT NULL,
  event       VARCHAR(16)   NOT NULL COMMENT 'opened, reopened, acknowledged, resolved, fixed',
  actor       VARCHAR(255)  NOT NULL COMMENT 'cronkit (a run), or operator:<name>',
  run_id      VARCHAR(32)   NULL COMMENT 'job_runs.id; NULL for an operator command',
  reason      VARCHAR(2000) NOT NULL,
  detail      JSON          NULL COMMENT 'what a fix changed, before and after',
  at          DATETIME(6)   NOT NULL,
  KEY reconcile_finding_events_finding (finding_id, id),
  CONSTRAINT reconcile_finding_events_actor CHECK (actor <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose StatementBegin
CREATE TRIGGER reconcile_finding_events_no_update BEFORE UPDATE ON reconcile_finding_events FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'reconcile_finding_events is append-only: rows cannot be updated';
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER reconcile_finding_events_no_delete BEFORE DELETE ON reconcile_finding_events FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'reconcile_finding_events is append-only: rows cannot be deleted';
-- +goose StatementEnd

-- +goose Down
DROP TABLE reconcile_finding_events;
DROP TABLE reconcile_findings;
