-- +goose Up
-- One row per job run (dry runs excluded), so `jobs history` and a bad night's
-- post-mortem do not depend on log retention.
CREATE TABLE job_runs (
  id          CHAR(26)     NOT NULL PRIMARY KEY COMMENT 'ULID, sortable by start',
  job         VARCHAR(64)  NOT NULL,
  host        VARCHAR(255) NOT NULL,
  version     VARCHAR(64)  NOT NULL,
  args        TEXT         NOT NULL,
  started_at  DATETIME(6)  NOT NULL,
  finished_at DATETIME(6)  NULL,
  status      ENUM('running','ok','failed','partial','cancelled') NOT NULL,
  exit_code   INT          NULL,
  counts      JSON         NULL,
  error       TEXT         NULL,
  KEY job_runs_job_started (job, started_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE job_runs;
