-- +goose Up
-- jobs drip (issue 9), versions 00060-00079: the onboarding funnel. Its cases,
-- transitions and messages live in the shared tables (cases, case_transitions,
-- mail_outbox); these two tables only make a run cost what is due, not what exists.
-- All DATETIMEs are UTC.

-- One row per funnel (the [funnel] name of its TOML). started_at is the instant the
-- funnel went live, recorded by its first real run (or --since): only signups from
-- then on enter, so the customers who were there before never get a welcome.
-- entered_until is how far signups have been enrolled into drip_due.
CREATE TABLE drip_funnels (
  name          VARCHAR(32) NOT NULL PRIMARY KEY,
  started_at    DATETIME(6) NOT NULL COMMENT 'signups created at or after this enter the funnel',
  entered_until DATETIME(6) NOT NULL COMMENT 'signups created up to here are enrolled in drip_due',
  created_at    DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- One row per account in a funnel: when a run must look at it next (its next step's
-- due time, its queued message's send time, or a periodic re-check of the goal and
-- the exits). NULL: the account has left the funnel for good (converted, exited,
-- completed; re-entry never). A run reads only the rows due now, a range of
-- drip_due_check, so its cost follows the accounts due, not the signups in the funnel.
CREATE TABLE drip_due (
  funnel     VARCHAR(32) NOT NULL,
  account_id BIGINT      NOT NULL,
  check_at   DATETIME(6) NULL COMMENT 'next look; NULL once the account left the funnel',
  PRIMARY KEY (funnel, account_id),
  KEY drip_due_check (funnel, check_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE drip_due;
DROP TABLE drip_funnels;
