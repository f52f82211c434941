package billing

import "time"

// The rating SQL. Every way of rating (new hours, late usage, a retry of unrated
// charges, one account) is the same SELECT over different usage rows, so a charge
// is computed the same way whichever path wrote it, and recomputing is idempotent.
// The fragments are constants; only values travel as parameters.

// usageAgg is the usage a rating statement reads: the FROM clause naming the
// usage rows u, the condition on them (with ?), and an optional condition on each
// key's totals. Only WHERE and HAVING take parameters.
type usageAgg struct{ from, where, having string }

// aggHours is every key of the hours [from, to); args (from, to). Read from
// usage_hour alone, in index order, however many hours a catch-up puts in one
// statement.
func aggHours() usageAgg {
	return usageAgg{from: `usage_records u`, where: `u.hour >= ? AND u.hour < ?`}
}

// aggHourAccount is one account's usage of an hour; args (hour, account).
func aggHourAccount() usageAgg {
	return usageAgg{from: `usage_records u`, where: `u.hour = ? AND u.account_id = ?`}
}

// aggLate is the keys of the hours [from, to) whose usage was recorded (inserted
// or corrected) since the scan's mark, totalled over ALL their usage; args (from,
// to, mark). One ordered pass over those hours in usage_hour, which carries
// recorded_at for this: no temporary table, no sort, no lookup per key, however
// many keys a load touched.
func aggLate() usageAgg {
	return usageAgg{from: `usage_records u`, where: `u.hour >= ? AND u.hour < ?`, having: `MAX(u.recorded_at) >= ?`}
}

// aggUnrated is the keys of one hour whose charge is unrated; args (hour).
func aggUnrated() usageAgg {
	return usageAgg{
		from: `usage_records u JOIN charges k ON k.hour = u.hour AND k.account_id = u.account_id
    AND k.product = u.product AND k.status = 'unrated'`,
		where: `u.hour = ?`,
	}
}

// nextPriceBoundarySQL is the first instant after one where the price list changes
// (a row starts or ends); args (after, after).
const nextPriceBoundarySQL = `SELECT MIN(t) FROM (
  SELECT valid_from AS t FROM prices WHERE valid_from > ?
  UNION ALL SELECT valid_to FROM prices WHERE valid_to > ?) b`

// ratingArgs are a rating statement's arguments: the instant whose price list
// applies, twice, then the aggregation's.
func ratingArgs(at time.Time, aggArgs ...any) []any {
	return append([]any{at, at}, aggArgs...)
}

// Out-of-range guards. A charge's quantity is stored in DECIMAL(20,6); its amount,
// although stored in DECIMAL(20,6) too, must also fit Micros (±9.2e12) when billing
// adds charges up, so rating keeps it below 10^12 units: no real hourly charge comes
// near, and a handful of such charges still add up inside Micros. A key beyond
// either bound is stored unrated with a problem instead of failing the INSERT of
// everyone's charges (quantity_out_of_range keeps no quantity: it does not fit).
const (
	maxQuantity = "99999999999999.999999"
	maxAmount   = "999999999999.999999"
)

// ratingRows prices agg's keys: the account's currency, the price valid at one
// instant in that currency (overlapping price rows: the latest valid_from wins, then
// the highest id, so there is always exactly one), the amount, and the problem that
// keeps a key unrated. Every value of a usage row, however extreme, gives a row
// that fits charges. Rating prices one hour, or hours no price boundary falls
// between, at once.
//
// It is shaped for speed, measured: the account and the price are joined to each
// usage row and taken as plain columns of the group (functionally dependent on it;
// the session's sql_mode has no ONLY_FULL_GROUP_BY), and the problem and the amount
// are computed once per key inside the grouped table, so that the outer columns
// only test them (MariaDB keeps one accumulator per written aggregate, and four
// columns depend on the problem). Args: ratingArgs.
func ratingRows(agg usageAgg) string {
	q := `SELECT x.hour, x.account_id, x.product,
  IF(x.problem <=> 'quantity_out_of_range', NULL, x.q) AS quantity,
  IF(x.problem IS NULL, x.unit_price, NULL) AS unit_price,
  IF(x.problem IS NULL, x.amount, NULL) AS amount,
  x.currency,
  IF(x.problem IS NULL, 'rated', 'unrated') AS status,
  x.problem
FROM (
  SELECT u.hour, u.account_id, u.product, SUM(u.quantity) AS q, a.currency, p.unit_price,
    ROUND(SUM(u.quantity) * p.unit_price, 6) AS amount,
    CASE WHEN ABS(SUM(u.quantity)) > ` + maxQuantity + ` THEN 'quantity_out_of_range'
         WHEN a.id IS NULL THEN 'unknown_account'
         WHEN MIN(u.quantity) < 0 THEN 'negative_quantity'
         WHEN p.unit_price IS NULL THEN 'unpriced'
         WHEN ABS(ROUND(SUM(u.quantity) * p.unit_price, 6)) > ` + maxAmount + ` THEN 'amount_out_of_range' END AS problem
  FROM ` + agg.from + `
  LEFT JOIN accounts a ON a.id = u.account_id
  LEFT JOIN (
    SELECT pv.product, pv.currency, pv.unit_price FROM (
      SELECT product, currency, unit_price,
        ROW_NUMBER() OVER (PARTITION BY product, currency ORDER BY valid_from DESC, id DESC) AS rn
      FROM prices WHERE valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)) pv
    WHERE pv.rn = 1) p ON p.product = u.product AND p.currency = a.currency
  WHERE ` + agg.where + `
  GROUP BY u.hour, u.account_id, u.product`
	if agg.having != "" {
		q += `
  HAVING ` + agg.having
	}
	return q + `
) x`
}

// sameCharge is true when the stored charge c already says what the recomputation r
// says.
const sameCharge = `c.quantity <=> r.quantity AND c.unit_price <=> r.unit_price AND c.amount <=> r.amount
    AND c.currency <=> r.currency AND c.status <=> r.status AND c.problem <=> r.problem`

// insertHoursSQL rates the new hours [from, to), which no price boundary falls
// between. The upsert only matters when ops moved the watermark back to re-rate:
// charges already on an invoice are then left alone. Args: (rated_at), then
// ratingArgs(from, from, to).
func insertHoursSQL() string {
	return `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, problem, rated_at)
SELECT r.account_id, r.product, r.hour, r.quantity, r.unit_price, r.amount, r.currency, r.status, r.problem, ?
FROM (` + ratingRows(aggHours()) + `) r
ON DUPLICATE KEY UPDATE
  charges.quantity = IF(charges.invoice_id IS NULL, VALUES(quantity), charges.quantity),
  charges.unit_price = IF(charges.invoice_id IS NULL, VALUES(unit_price), charges.unit_price),
  charges.amount = IF(charges.invoice_id IS NULL, VALUES(amount), charges.amount),
  charges.currency = IF(charges.invoice_id IS NULL, VALUES(currency), charges.currency),
  charges.status = IF(charges.invoice_id IS NULL, VALUES(status), charges.status),
  charges.problem = IF(charges.invoice_id IS NULL, VALUES(problem), charges.problem),
  charges.rated_at = IF(charges.invoice_id IS NULL, VALUES(rated_at), charges.rated_at)`
}

// hourStatsSQL summarises the charges of the hours [from, to) for the report, per
// hour, in two parts that readHourStats adds up: the charges with ids in (lo, hi]
// (those the chunk's INSERT just wrote: a range of the primary key, read in order)
// and the others (charges_hour alone, the id tested in the index, a lookup only for
// a charge the upsert updated); args (lo, hi, from, to, lo, from, to). Measured:
// asked for the hours alone, the optimizer, whose statistics still see charges as
// they were before the run, scanned the whole table, so each chunk of a catch-up
// reread every charge written before it (a tenth of a 1,440-hour catch-up, growing
// with the square of its length); forcing charges_hour cost a lookup per charge,
// slower still on small catch-ups. The upper bound keeps the scan off the charges
// the next chunk is inserting meanwhile.
const hourStatsSQL = `SELECT hour, currency, problem, COUNT(*), SUM(amount) FROM charges FORCE INDEX (PRIMARY)
WHERE id > ? AND id <= ? AND hour >= ? AND hour < ?
GROUP BY hour, currency, problem
UNION ALL
SELECT hour, currency, problem, COUNT(*), SUM(amount) FROM charges FORCE INDEX (charges_hour)
WHERE id <= ? AND hour >= ? AND hour < ?
GROUP BY hour, currency, problem`

// maxChargeIDSQL is the highest charge id, read before and after a chunk's INSERT:
// the charges it inserted are between (see hourStatsSQL).
const maxChargeIDSQL = `SELECT COALESCE(MAX(id), 0) FROM charges`

// planHourStatsSQL is the same summary computed without writing (dry run); args
// ratingArgs(from, from, to).
func planHourStatsSQL() string {
	return `SELECT r.hour, r.currency, r.problem, COUNT(*), SUM(r.amount) FROM (` + ratingRows(aggHours()) + `) r
GROUP BY r.hour, r.currency, r.problem`
}

// planHourProblemsSQL lists the keys of the hours [from, to) that would stay
// unrated (dry run); args ratingArgs(from, from, to).
func planHourProblemsSQL() string {
	return `SELECT r.hour, r.account_id, r.product, r.currency, r.problem FROM (` + ratingRows(aggHours()) + `) r
WHERE r.problem IS NOT NULL`
}

// setWatermarkSQL records the last hour rated; args (hour, updated_at).
const setWatermarkSQL = `INSERT INTO billing_state (name, hour_watermark, updated_at) VALUES ('rating', ?, ?)
ON DUPLICATE KEY UPDATE hour_watermark = VALUES(hour_watermark), updated_at = VALUES(updated_at)`

// scanHorizonSQL reads what the late-usage scan's mark is made of (see
// rater.scanHorizon): the database's time, the start of the oldest transaction in
// flight that has written anything, how long (µs) the longest statement still
// running has run, and whether INNODB_TRX (a cache) lists our own transaction.
// INNODB_TRX needs the PROCESS privilege and refuses without it (PROCESSLIST would
// silently show only our own session).
const scanHorizonSQL = `SELECT NOW(6),
  (SELECT MIN(trx_started) FROM information_schema.INNODB_TRX
    WHERE trx_mysql_thread_id <> CONNECTION_ID() AND trx_rows_modified > 0),
  (SELECT CAST(MAX(TIME_MS) * 1000 AS SIGNED) FROM information_schema.PROCESSLIST
    WHERE ID <> CONNECTION_ID() AND COMMAND IN ('Query', 'Execute')),
  EXISTS (SELECT 1 FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = CONNECTION_ID())`

// setLateScanSQL records where the next late-usage scan starts; args (from, updated_at).
const setLateScanSQL = `INSERT INTO billing_state (name, late_scan_from, updated_at) VALUES ('rating', ?, ?)
ON DUPLICATE KEY UPDATE late_scan_from = VALUES(late_scan_from), updated_at = VALUES(updated_at)`

// invoicedMonth is true when the account of rating row r has an invoice for the
// month of r's hour.
const invoicedMonth = `EXISTS (SELECT 1 FROM invoices i WHERE i.account_id = r.account_id
    AND i.period_start = CAST(DATE_FORMAT(r.hour, '%Y-%m-01') AS DATE))`

// diffColumns are a recomputed charge r and the stored one c it is compared with:
// hour, account_id, product, quantity, amount, currency, problem, existed, the old
// quantity, amount, currency and problem, and whether the account's month is
// already invoiced (closed).
const diffColumns = `r.hour, r.account_id, r.product, r.quantity, r.amount, r.currency, r.problem,
  c.id IS NOT NULL AS existed, c.quantity AS old_quantity, c.amount AS old_amount, c.currency AS old_currency,
  c.problem AS old_problem, c.invoice_id IS NOT NULL OR ` + invoicedMonth + ` AS closed`

// differs joins the stored charges to the recomputed ones r and keeps those that
// differ or are missing.
const differs = `
LEFT JOIN charges c ON c.account_id = r.account_id AND c.product = r.product AND c.hour = r.hour
WHERE c.id IS NULL OR NOT (` + sameCharge + `)`

// compareSQL recomputes the keys agg selects and returns those whose stored charge
// differs (or is missing), as diffColumns, in hour, account and product order: the
// dry run's plan. Args: ratingArgs.
func compareSQL(agg usageAgg) string {
	return `SELECT ` + diffColumns + `
FROM (` + ratingRows(agg) + `) r` + differs + `
ORDER BY r.hour, r.account_id, r.product`
}

// createDiffSQL is compareSQL into a temporary table, with what updateDiffSQL and
// insertDiffSQL write: the differences are computed once per re-rating. Args:
// ratingArgs.
func createDiffSQL(agg usageAgg) string {
	return `CREATE OR REPLACE TEMPORARY TABLE rerate_diff AS
SELECT ` + diffColumns + `, c.id AS charge_id, r.unit_price, r.status
FROM (` + ratingRows(agg) + `) r` + differs
}

// diffCountsSQL counts the charges createDiffSQL's table updates and inserts.
const diffCountsSQL = `SELECT COALESCE(SUM(existed AND NOT closed), 0), COALESCE(SUM(NOT existed AND NOT closed), 0)
FROM rerate_diff`

// diffClosedSQL and diffListSQL read createDiffSQL's table as compareSQL returns
// it: every key in an invoiced month, and the first of the others (args (limit)).
const (
	diffClosedSQL = `SELECT hour, account_id, product, quantity, amount, currency, problem,
  existed, old_quantity, old_amount, old_currency, old_problem, closed
FROM rerate_diff WHERE closed ORDER BY hour, account_id, product`
	diffListSQL = `SELECT hour, account_id, product, quantity, amount, currency, problem,
  existed, old_quantity, old_amount, old_currency, old_problem, closed
FROM rerate_diff WHERE NOT closed ORDER BY hour, account_id, product LIMIT ?`
)

// updateDiffSQL and insertDiffSQL write the differences, except into invoiced
// months (those are reported instead): stored charges are updated in place, the
// missing ones inserted. (An upsert first tries to insert every row, and undoes
// that for each key that exists: a third more for a bulk re-rating.) Args:
// (rated_at).
const (
	updateDiffSQL = `UPDATE charges c JOIN rerate_diff d ON c.id = d.charge_id
SET c.quantity = d.quantity, c.unit_price = d.unit_price, c.amount = d.amount, c.currency = d.currency,
  c.status = d.status, c.problem = d.problem, c.rated_at = ?
WHERE d.existed AND NOT d.closed`
	insertDiffSQL = `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, problem, rated_at)
SELECT account_id, product, hour, quantity, unit_price, amount, currency, status, problem, ?
FROM rerate_diff WHERE NOT existed AND NOT closed`
)

// dropDiffSQL frees the table (a pooled connection keeps its temporary tables).
const dropDiffSQL = `DROP TEMPORARY TABLE IF EXISTS rerate_diff`

// priceOverlapsSQL finds price rows of one product and currency whose validity
// overlaps: rating picks one deterministically, but the price list is wrong.
const priceOverlapsSQL = `SELECT p1.product, p1.currency, p1.id, p2.id, GREATEST(p1.valid_from, p2.valid_from)
FROM prices p1 JOIN prices p2 ON p2.product = p1.product AND p2.currency = p1.currency AND p2.id > p1.id
WHERE p1.valid_from < COALESCE(p2.valid_to, '9999-12-31') AND p2.valid_from < COALESCE(p1.valid_to, '9999-12-31')
ORDER BY p1.product, p1.currency, p1.id, p2.id`

// unratedSQL is every charge still unrated, grouped for the report; args none, or
// (account) with unratedAccountSQL.
const (
	unratedSQL = `SELECT problem, account_id, product, currency, COUNT(*), MIN(hour), MAX(hour)
FROM charges WHERE status = 'unrated'
GROUP BY problem, account_id, product, currency ORDER BY problem, account_id, product, currency`
	unratedAccountSQL = `SELECT problem, account_id, product, currency, COUNT(*), MIN(hour), MAX(hour)
FROM charges WHERE status = 'unrated' AND account_id = ?
GROUP BY problem, account_id, product, currency ORDER BY problem, account_id, product, currency`
	// unratedKeysSQL loads the unrated charges a dry run starts from.
	unratedKeysSQL        = `SELECT account_id, product, hour, currency, problem FROM charges WHERE status = 'unrated'`
	unratedKeysAccountSQL = `SELECT account_id, product, hour, currency, problem FROM charges
WHERE status = 'unrated' AND account_id = ?`
)
