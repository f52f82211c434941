package reconcile

import "strings"

// The usage check's SQL. Values travel only as parameters; a batch statement repeats a
// constant group of placeholders.

const (
	// createStageSQL is the orchestrator's side of one run: every VM, volume and
	// address of the inventory (src 0) and every event of the window (src 1), keyed
	// so that reading it in key order is reading it grouped by resource, in byte
	// order (VARBINARY), the order the metering side is read in. TEMPORARY: it lives
	// on the run's own connection and vanishes with it.
	createStageSQL = `CREATE TEMPORARY TABLE reconcile_usage_stage (
  resource_id   VARBINARY(64)  NOT NULL,
  kind          TINYINT UNSIGNED NOT NULL COMMENT '1 vm, 2 volume, 3 ip',
  src           TINYINT UNSIGNED NOT NULL COMMENT '0 inventory, 1 event',
  at            DATETIME       NOT NULL COMMENT 'UTC: the event, or the inventory''s creation time',
  ord           TINYINT UNSIGNED NOT NULL COMMENT 'order of events within a second',
  event_id      VARBINARY(64)  NOT NULL COMMENT 'empty for inventory',
  what          VARCHAR(32)    CHARACTER SET ascii NOT NULL COMMENT 'inventory state, or event type',
  cs_account_id VARBINARY(64)  NOT NULL,
  PRIMARY KEY (resource_id, kind, src, at, ord, event_id)
) ENGINE=InnoDB`

	// dropStageSQL ends the run's staging (also before creating it: a pooled
	// connection may still hold an earlier run's, if that run could not drop it).
	dropStageSQL = `DROP TEMPORARY TABLE IF EXISTS reconcile_usage_stage`

	// insertStagePrefix stages a batch: followed by valueRows(n, stageRowGroup). A row
	// listed twice (offset paging while the inventory changes, an event re-read) is
	// kept once.
	insertStagePrefix = `INSERT IGNORE INTO reconcile_usage_stage (resource_id, kind, src, at, ord, event_id, what, cs_account_id) VALUES `
	stageRowGroup     = `(?, ?, ?, ?, ?, ?, ?, ?)`

	// selectStageSQL reads the orchestrator's side in key order: the primary key's
	// order, so it streams without sorting.
	selectStageSQL = `SELECT resource_id, kind, src, at, what, cs_account_id FROM reconcile_usage_stage
ORDER BY resource_id, kind, src, at, ord, event_id`

	// selectMeteringSQL reads the metering side of a window, in the same byte order
	// of resource ids: collect's raw records of the usage types the check follows
	// (with their real start and end), and the usage_records rows no raw record
	// carries (written by other metering agents), as hour-long records of unknown
	// type (0) whose quantity is in the product's unit. Args: raw start from, raw
	// start to, window from (raw end), window from, window to (usage_records hours).
	//
	// A raw record is read when it starts within a day before the window and ends in
	// it: a daily usage server's record starts at most a day before.
	selectMeteringSQL = `(SELECT CAST(usage_id AS BINARY) AS k, usage_type, start_date, end_date, raw_usage,
    CAST(cs_account_id AS BINARY) AS cs, COALESCE(account_id, 0) AS acct, CAST(status AS CHAR) AS st, COALESCE(product, '') AS product
  FROM cloudstack_usage
  WHERE start_date >= ? AND start_date < ? AND end_date >= ? AND usage_type IN (1, 2, 3, 6))
UNION ALL
(SELECT CAST(ur.resource_id AS BINARY), 0, ur.hour, ur.hour + INTERVAL 3599 SECOND, CAST(ur.quantity AS CHAR),
    CAST(COALESCE(a.cloudstack_account_id, '') AS BINARY), ur.account_id, 'usage_record', ur.product
  FROM usage_records ur
  LEFT JOIN accounts a ON a.id = ur.account_id
  WHERE ur.hour >= ? AND ur.hour < ?
    AND NOT EXISTS (SELECT 1 FROM cloudstack_usage cu
      WHERE cu.usage_id = CONVERT(ur.resource_id USING ascii) AND cu.product = ur.product AND cu.hour = ur.hour))
ORDER BY k, start_date, usage_type`

	// selectCollectCoverageSQL is how far collect has read the usage server: hours
	// after it are not judged as unmetered yet.
	selectCollectCoverageSQL = `SELECT coverage, read_to FROM usage_collect_state WHERE name = 'cloudstack'`

	// selectSuspendedSQL lists the accounts cronkit has suspended or terminated, with
	// the latest case holding them (open, or terminated) when there is one.
	selectSuspendedSQL = `SELECT a.id, a.status, a.cloudstack_account_id,
  COALESCE(c.id, 0), COALESCE(c.machine, ''), COALESCE(c.state, ''), c.state_since
FROM accounts a
LEFT JOIN cases c ON c.id = (SELECT MAX(c2.id) FROM cases c2
  WHERE c2.account_id = a.id AND (c2.closed_at IS NULL OR c2.state = 'terminated'))
WHERE a.status IN ('suspended', 'terminated') AND a.cloudstack_account_id IS NOT NULL AND a.cloudstack_account_id <> ''
ORDER BY a.id`

	// selectAccountByCloudStackSQL is our account for a CloudStack account id, for a
	// finding's account_id; several claiming it are reported as the lowest.
	selectAccountByCloudStackSQL = `SELECT MIN(id) FROM accounts WHERE cloudstack_account_id = ?`
)

// valueRows is n copies of group, comma-separated, for a multi-row INSERT.
func valueRows(n int, group string) string {
	return strings.TrimSuffix(strings.Repeat(group+", ", n), ", ")
}

func insertStageSQL(n int) string { return insertStagePrefix + valueRows(n, stageRowGroup) }
