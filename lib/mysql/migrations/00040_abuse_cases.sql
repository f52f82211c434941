-- +goose Up
-- The abuse job's state machines (jobs/abuse): one row per case, one machine per case
-- ('dunning': late payment; 'free_credit': free-credit abuse). A case is open until
-- closed_at is set (resolved, cleared or terminated). All DATETIMEs are UTC.
CREATE TABLE abuse_cases (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id      BIGINT       NOT NULL,
  machine         ENUM('dunning','free_credit') NOT NULL,
  state           VARCHAR(32)  NOT NULL,
  -- Optimistic concurrency: every change is UPDATE ... WHERE id = ? AND version = ?,
  -- and each version has exactly one transition row.
  version         INT          NOT NULL,
  opened_at       DATETIME(6)  NOT NULL,
  state_since     DATETIME(6)  NOT NULL COMMENT 'when the current state was entered',
  closed_at       DATETIME(6)  NULL,
  approved_at     DATETIME(6)  NULL COMMENT 'termination approved (dunning) or abuse confirmed (free_credit) by a person',
  approved_by     VARCHAR(255) NULL,
  evidence        JSON         NOT NULL COMMENT 'facts behind the latest transition',
  updated_at      DATETIME(6)  NOT NULL,
  -- Non-NULL only while the case is open: the unique key below allows one open case
  -- per account and machine, and any number of closed ones.
  open_account_id BIGINT AS (IF(closed_at IS NULL, account_id, NULL)) PERSISTENT,
  UNIQUE KEY abuse_cases_one_open (machine, open_account_id),
  KEY abuse_cases_account (account_id, machine, opened_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The audit trail: one row per transition, never updated or deleted (the triggers
-- below refuse it). case_version is the version the transition produced, so a
-- transition can never be recorded twice.
CREATE TABLE abuse_transitions (
  id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  case_id      BIGINT        NOT NULL,
  case_version INT           NOT NULL,
  account_id   BIGINT        NOT NULL,
  machine      ENUM('dunning','free_credit') NOT NULL,
  from_state   VARCHAR(32)   NOT NULL,
  to_state     VARCHAR(32)   NOT NULL,
  event        VARCHAR(32)   NOT NULL,
  reason       VARCHAR(2000) NOT NULL,
  evidence     JSON          NOT NULL,
  run_id       CHAR(26)      NULL COMMENT 'job_runs.id; NULL for an operator command',
  actor        VARCHAR(255)  NOT NULL COMMENT 'cronkit, or operator:<name>',
  at           DATETIME(6)   NOT NULL COMMENT 'the instant evaluated (the run clock, or --now)',
  UNIQUE KEY abuse_transitions_case_version (case_id, case_version),
  KEY abuse_transitions_account (account_id, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose StatementBegin
CREATE TRIGGER abuse_transitions_no_update BEFORE UPDATE ON abuse_transitions FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'abuse_transitions is append-only: rows cannot be updated';
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER abuse_transitions_no_delete BEFORE DELETE ON abuse_transitions FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'abuse_transitions is append-only: rows cannot be deleted';
-- +goose StatementEnd

-- The side effects a transition requires, written in the transition's own database
-- transaction (intent), then performed against the orchestrator (or the mail outbox)
-- and marked done (confirmation). Expansion actions (stop_vms, destroy_vms) add one
-- row per VM when they run. Unique per transition, action and target, so a rerun
-- never adds an action twice.
CREATE TABLE abuse_actions (
  id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  case_id       BIGINT       NOT NULL,
  transition_id BIGINT       NOT NULL,
  account_id    BIGINT       NOT NULL,
  seq           TINYINT      NOT NULL COMMENT 'order within the transition',
  action        VARCHAR(32)  NOT NULL COMMENT 'stop_vms, stop_vm, disable_account, enable_account, start_vm, destroy_vms, destroy_vm, notify',
  target        VARCHAR(191) NOT NULL COMMENT 'CloudStack VM or account id; recipient for notify',
  payload       JSON         NULL COMMENT 'notify: the rendered message',
  status        ENUM('pending','done','cancelled') NOT NULL DEFAULT 'pending',
  attempts      INT          NOT NULL DEFAULT 0 COMMENT 'counted before each call, so >0 means it may have happened',
  outcome       VARCHAR(255) NOT NULL DEFAULT '',
  last_error    TEXT         NULL,
  created_at    DATETIME(6)  NOT NULL,
  updated_at    DATETIME(6)  NOT NULL,
  done_at       DATETIME(6)  NULL,
  UNIQUE KEY abuse_actions_once (transition_id, action, target),
  KEY abuse_actions_pending (status, account_id, case_id),
  KEY abuse_actions_case (case_id, seq, id),
  -- What cronkit stopped or disabled on an account and has not restarted since.
  KEY abuse_actions_account (account_id, action, target)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE abuse_actions;
DROP TABLE abuse_transitions;
DROP TABLE abuse_cases;
