-- +goose Up
-- CPU utilisation of free-credit accounts' VMs, one sample per account and abuse run,
-- so "near 100 % for hours" is judged over a history and not one reading. Pruned by
-- the job after a few days.
CREATE TABLE abuse_cpu_samples (
  account_id  BIGINT       NOT NULL,
  sampled_at  DATETIME(6)  NOT NULL,
  vms_running INT          NOT NULL,
  vms_hot     INT          NOT NULL COMMENT 'running VMs at or above the policy hot_percent',
  avg_cpu     DECIMAL(6,2) NOT NULL COMMENT 'mean CPU percent over running VMs',
  PRIMARY KEY (account_id, sampled_at),
  KEY abuse_cpu_samples_at (sampled_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- +goose Down
DROP TABLE abuse_cpu_samples;
