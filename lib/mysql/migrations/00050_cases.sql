-- +goose Up
-- lib/cases: the audited state machine store every job shares (abuse's dunning and
-- free-credit machines, drip's funnels next). Versions 00050-00059 are lib/cases',
-- carved from the end of abuse's range (40-59): below drip's (60-79), which builds on
-- these tables, and above every migration a deployed database already has, so goose
-- applies it in order.
--
-- The tables are shared, told apart by `machine` (a name unique across jobs). This
-- migration moves abuse's cases, transitions and actions into them with their ids
-- (so case numbers in mail keys, logs and tickets stay valid), drops abuse's tables
-- and leaves read-only views under their old names for the queries ops already have.
-- All DATETIMEs are UTC.

-- One row per case. A case is open until closed_at is set.
CREATE TABLE cases (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id      BIGINT       NOT NULL,
  machine         VARCHAR(64)  NOT NULL COMMENT 'the machine (lib/cases.Machine.Name), unique across jobs',
  state           VARCHAR(64)  NOT NULL,
  -- Optimistic concurrency: every change is UPDATE ... WHERE id = ? AND version = ?,
  -- and each version has exactly one transition row.
  version         INT          NOT NULL,
  opened_at       DATETIME(6)  NOT NULL,
  state_since     DATETIME(6)  NOT NULL COMMENT 'when the current state was entered',
  closed_at       DATETIME(6)  NULL,
  approved_at     DATETIME(6)  NULL COMMENT 'a person signed off (e.g. approved a termination)',
  approved_by     VARCHAR(255) NULL,
  evidence        JSON         NOT NULL COMMENT 'facts behind the latest transition',
  updated_at      DATETIME(6)  NOT NULL,
  -- Non-NULL only while the case is open: the unique key below allows one open case
  -- per machine and account, and any number of closed ones. It is also the index a
  -- run reads its open cases by.
  open_account_id BIGINT AS (IF(closed_at IS NULL, account_id, NULL)) PERSISTENT,
  UNIQUE KEY cases_one_open (machine, open_account_id),
  KEY cases_account (account_id, machine, opened_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- The audit trail: one row per transition, never updated or deleted (the triggers
-- below refuse it). case_version is the version the transition produced, so a
-- transition can never be recorded twice.
CREATE TABLE case_transitions (
  id           BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
  case_id      BIGINT        NOT NULL,
  case_version INT           NOT NULL,
  account_id   BIGINT        NOT NULL,
  machine      VARCHAR(64)   NOT NULL,
  from_state   VARCHAR(64)   NOT NULL,
  to_state     VARCHAR(64)   NOT NULL,
  event        VARCHAR(64)   NOT NULL,
  reason       VARCHAR(2000) NOT NULL,
  evidence     JSON          NOT NULL,
  run_id       CHAR(26)      NULL COMMENT 'job_runs.id; NULL for an operator command',
  actor        VARCHAR(255)  NOT NULL COMMENT 'the job (cronkit), or operator:<name>',
  at           DATETIME(6)   NOT NULL COMMENT 'the instant evaluated (the run clock, or --now)',
  UNIQUE KEY case_transitions_case_version (case_id, case_version),
  KEY case_transitions_account (account_id, id),
  CONSTRAINT case_transitions_actor CHECK (actor <> '')
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose StatementBegin
CREATE TRIGGER case_transitions_no_update BEFORE UPDATE ON case_transitions FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'case_transitions is append-only: rows cannot be updated';
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER case_transitions_no_delete BEFORE DELETE ON case_transitions FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'case_transitions is append-only: rows cannot be deleted';
-- +goose StatementEnd

-- The side effects a transition requires, written in the transition's own database
-- transaction (intent), then performed after the commit (an orchestrator call, a
-- mail) and marked done (confirmation). Unique per transition, action and target, so
-- a rerun never adds an action twice.
CREATE TABLE case_actions (
  id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  case_id       BIGINT       NOT NULL,
  transition_id BIGINT       NOT NULL,
  account_id    BIGINT       NOT NULL,
  machine       VARCHAR(64)  NOT NULL COMMENT 'the case''s machine: a store lists only its own',
  seq           TINYINT      NOT NULL COMMENT 'order within the transition',
  action        VARCHAR(32)  NOT NULL COMMENT 'the job''s name for it, e.g. stop_vm, notify',
  target        VARCHAR(191) NOT NULL COMMENT 'what it acts on: a VM or account id, a recipient',
  payload       JSON         NULL COMMENT 'what the performer needs beyond the target (a rendered message)',
  status        ENUM('pending','done','cancelled') NOT NULL DEFAULT 'pending',
  attempts      INT          NOT NULL DEFAULT 0 COMMENT 'counted before each external call, so >0 means it may have happened',
  outcome       VARCHAR(255) NOT NULL DEFAULT '',
  last_error    TEXT         NULL,
  created_at    DATETIME(6)  NOT NULL,
  updated_at    DATETIME(6)  NOT NULL,
  done_at       DATETIME(6)  NULL,
  UNIQUE KEY case_actions_once (transition_id, action, target),
  KEY case_actions_pending (status, machine, account_id, case_id),
  KEY case_actions_case (case_id, status, seq, id),
  -- What a job did to an account and has not undone since (lib/cases Attempted).
  KEY case_actions_account (account_id, action, target)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Abuse's rows, ids kept. The AUTO_INCREMENT counters move past them by themselves.
INSERT INTO cases (id, account_id, machine, state, version, opened_at, state_since, closed_at,
  approved_at, approved_by, evidence, updated_at)
SELECT id, account_id, machine, state, version, opened_at, state_since, closed_at,
  approved_at, approved_by, evidence, updated_at
FROM abuse_cases ORDER BY id;

INSERT INTO case_transitions (id, case_id, case_version, account_id, machine, from_state, to_state, event,
  reason, evidence, run_id, actor, at)
SELECT id, case_id, case_version, account_id, machine, from_state, to_state, event,
  reason, evidence, run_id, actor, at
FROM abuse_transitions ORDER BY id;

INSERT INTO case_actions (id, case_id, transition_id, account_id, machine, seq, action, target, payload,
  status, attempts, outcome, last_error, created_at, updated_at, done_at)
SELECT a.id, a.case_id, a.transition_id, a.account_id, c.machine, a.seq, a.action, a.target, a.payload,
  a.status, a.attempts, a.outcome, a.last_error, a.created_at, a.updated_at, a.done_at
FROM abuse_actions a JOIN abuse_cases c ON c.id = a.case_id ORDER BY a.id;

-- Refuse to drop anything unless every row arrived (an action of a vanished case
-- would have been left behind by the join above).
-- +goose StatementBegin
BEGIN NOT ATOMIC
  IF (SELECT COUNT(*) FROM abuse_cases) <> (SELECT COUNT(*) FROM cases)
     OR (SELECT COUNT(*) FROM abuse_transitions) <> (SELECT COUNT(*) FROM case_transitions)
     OR (SELECT COUNT(*) FROM abuse_actions) <> (SELECT COUNT(*) FROM case_actions) THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '00050_cases: abuse rows were not all copied; abuse tables kept';
  END IF;
END;
-- +goose StatementEnd

DROP TABLE abuse_actions;
DROP TABLE abuse_transitions;
DROP TABLE abuse_cases;

-- The old names, read-only, for ops' queries and dashboards: abuse's machines only.
CREATE VIEW abuse_cases AS
SELECT id, account_id, machine, state, version, opened_at, state_since, closed_at, approved_at, approved_by,
  evidence, updated_at, open_account_id
FROM cases WHERE machine IN ('dunning', 'free_credit');

CREATE VIEW abuse_transitions AS
SELECT id, case_id, case_version, account_id, machine, from_state, to_state, event, reason, evidence, run_id,
  actor, at
FROM case_transitions WHERE machine IN ('dunning', 'free_credit');

CREATE VIEW abuse_actions AS
SELECT id, case_id, transition_id, account_id, seq, action, target, payload, status, attempts, outcome,
  last_error, created_at, updated_at, done_at
FROM case_actions WHERE machine IN ('dunning', 'free_credit');

-- +goose Down
-- Back to abuse's own tables. Refused while another job's machines have cases: their
-- history has nowhere to go.
-- +goose StatementBegin
BEGIN NOT ATOMIC
  IF EXISTS (SELECT 1 FROM cases WHERE machine NOT IN ('dunning', 'free_credit')) THEN
    SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '00050_cases down: cases of other machines exist';
  END IF;
END;
-- +goose StatementEnd

DROP VIEW abuse_actions;
DROP VIEW abuse_transitions;
DROP VIEW abuse_cases;

CREATE TABLE abuse_cases (
  id              BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
  account_id      BIGINT       NOT NULL,
  machine         ENUM('dunning','free_credit') NOT NULL,
  state           VARCHAR(32)  NOT NULL,
  version         INT          NOT NULL,
  opened_at       DATETIME(6)  NOT NULL,
  state_since     DATETIME(6)  NOT NULL COMMENT 'when the current state was entered',
  closed_at       DATETIME(6)  NULL,
  approved_at     DATETIME(6)  NULL COMMENT 'termination approved (dunning) or abuse confirmed (free_credit) by a person',
  approved_by     VARCHAR(255) NULL,
  evidence        JSON         NOT NULL COMMENT 'facts behind the latest transition',
  updated_at      DATETIME(6)  NOT NULL,
  open_account_id BIGINT AS (IF(closed_at IS NULL, account_id, NULL)) PERSISTENT,
  UNIQUE KEY abuse_cases_one_open (machine, open_account_id),
  KEY abuse_cases_account (account_id, machine, opened_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

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
  KEY abuse_actions_account (account_id, action, target)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

INSERT INTO abuse_cases (id, account_id, machine, state, version, opened_at, state_since, closed_at,
  approved_at, approved_by, evidence, updated_at)
SELECT id, account_id, machine, state, version, opened_at, state_since, closed_at,
  approved_at, approved_by, evidence, updated_at
FROM cases ORDER BY id;

INSERT INTO abuse_transitions (id, case_id, case_version, account_id, machine, from_state, to_state, event,
  reason, evidence, run_id, actor, at)
SELECT id, case_id, case_version, account_id, machine, from_state, to_state, event,
  reason, evidence, run_id, actor, at
FROM case_transitions ORDER BY id;

INSERT INTO abuse_actions (id, case_id, transition_id, account_id, seq, action, target, payload,
  status, attempts, outcome, last_error, created_at, updated_at, done_at)
SELECT id, case_id, transition_id, account_id, seq, action, target, payload,
  status, attempts, outcome, last_error, created_at, updated_at, done_at
FROM case_actions ORDER BY id;

-- +goose StatementBegin
CREATE TRIGGER abuse_transitions_no_update BEFORE UPDATE ON abuse_transitions FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'abuse_transitions is append-only: rows cannot be updated';
-- +goose StatementEnd

-- +goose StatementBegin
CREATE TRIGGER abuse_transitions_no_delete BEFORE DELETE ON abuse_transitions FOR EACH ROW
  SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'abuse_transitions is append-only: rows cannot be deleted';
-- +goose StatementEnd

DROP TABLE case_actions;
DROP TABLE case_transitions;
DROP TABLE cases;
