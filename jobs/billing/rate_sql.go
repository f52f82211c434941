package billing

import "fmt"

// The rating SQL. Every way of rating (a new hour, late usage, a retry of unrated
// charges, one account) is the same SELECT over a different usage aggregation, so a
// charge is computed the same way whichever path wrote it, and recomputing is
// idempotent. The fragments are constants; only values travel as parameters.

// Usage aggregations: one row per account and product of one hour, with the hour's
// total (q) and its smallest record (minq, to find negative quantities).
const (
	// aggHour is a whole hour; args (hour). Index-only on usage_hour, and grouped in
	// index order, so no temporary table.
	aggHour = `SELECT account_id, product, SUM(quantity) AS q, MIN(quantity) AS minq
    FROM usage_records WHERE hour = ? GROUP BY account_id, product`
	// aggHourAccount is one account's usage of an hour; args (hour, account).
	aggHourAccount = `SELECT account_id, product, SUM(quantity) AS q, MIN(quantity) AS minq
    FROM usage_records WHERE hour = ? AND account_id = ? GROUP BY account_id, product`
	// aggLate is the keys of an hour with usage recorded (inserted or corrected)
	// since a time, totalled over ALL their usage; args (hour, since, hour).
	aggLate = `SELECT ur.account_id, ur.product, SUM(ur.quantity) AS q, MIN(ur.quantity) AS minq
    FROM (SELECT DISTINCT account_id, product FROM usage_records WHERE hour = ? AND recorded_at >= ?) k
    JOIN usage_records ur ON ur.hour = ? AND ur.account_id = k.account_id AND ur.product = k.product
    GROUP BY ur.account_id, ur.product`
	// aggUnrated is the keys of an hour whose charge is unrated; args (hour, hour).
	aggUnrated = `SELECT ur.account_id, ur.product, SUM(ur.quantity) AS q, MIN(ur.quantity) AS minq
    FROM (SELECT account_id, product FROM charges WHERE hour = ? AND status = 'unrated') k
    JOIN usage_records ur ON ur.hour = ? AND ur.account_id = k.account_id AND ur.product = k.product
    GROUP BY ur.account_id, ur.product`
)

// ratingRows prices an aggregation: the account's currency, the price valid at the
// hour in that currency (overlapping price rows: the latest valid_from wins, then the
// highest id, so there is always exactly one), and the problem that keeps a row
// unrated. Args: the aggregation's, then (hour, hour) for the price's validity.
func ratingRows(agg string) string {
	return fmt.Sprintf(`SELECT x.account_id, x.product, x.quantity,
  IF(x.problem IS NULL, x.unit_price, NULL) AS unit_price,
  IF(x.problem IS NULL, ROUND(x.quantity * x.unit_price, 6), NULL) AS amount,
  x.currency,
  IF(x.problem IS NULL, 'rated', 'unrated') AS status,
  x.problem
FROM (
  SELECT u.account_id, u.product, u.q AS quantity, a.currency, p.unit_price,
    CASE WHEN a.id IS NULL THEN 'unknown_account'
         WHEN u.minq < 0 THEN 'negative_quantity'
         WHEN p.unit_price IS NULL THEN 'unpriced' END AS problem
  FROM (%s) u
  LEFT JOIN accounts a ON a.id = u.account_id
  LEFT JOIN (
    SELECT pv.product, pv.currency, pv.unit_price FROM (
      SELECT product, currency, unit_price,
        ROW_NUMBER() OVER (PARTITION BY product, currency ORDER BY valid_from DESC, id DESC) AS rn
      FROM prices WHERE valid_from <= ? AND (valid_to IS NULL OR valid_to > ?)) pv
    WHERE pv.rn = 1) p ON p.product = u.product AND p.currency = a.currency
) x`, agg)
}

// sameCharge is true when the stored charge c already says what the recomputation r
// says.
const sameCharge = `c.quantity <=> r.quantity AND c.unit_price <=> r.unit_price AND c.amount <=> r.amount
    AND c.currency <=> r.currency AND c.status <=> r.status AND c.problem <=> r.problem`

// insertHourSQL rates a new hour. The upsert only matters when ops moved the
// watermark back to re-rate: charges already on an invoice are then left alone.
// Args: (hour, rated_at), ratingRows' args.
func insertHourSQL() string {
	return `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, problem, rated_at)
SELECT r.account_id, r.product, ?, r.quantity, r.unit_price, r.amount, r.currency, r.status, r.problem, ?
FROM (` + ratingRows(aggHour) + `) r
ON DUPLICATE KEY UPDATE
  charges.quantity = IF(charges.invoice_id IS NULL, VALUES(quantity), charges.quantity),
  charges.unit_price = IF(charges.invoice_id IS NULL, VALUES(unit_price), charges.unit_price),
  charges.amount = IF(charges.invoice_id IS NULL, VALUES(amount), charges.amount),
  charges.currency = IF(charges.invoice_id IS NULL, VALUES(currency), charges.currency),
  charges.status = IF(charges.invoice_id IS NULL, VALUES(status), charges.status),
  charges.problem = IF(charges.invoice_id IS NULL, VALUES(problem), charges.problem),
  charges.rated_at = IF(charges.invoice_id IS NULL, VALUES(rated_at), charges.rated_at)`
}

// hourStatsSQL summarises an hour's charges for the report; args (hour).
const hourStatsSQL = `SELECT currency, problem, COUNT(*), SUM(amount) FROM charges WHERE hour = ?
GROUP BY currency, problem`

// planHourStatsSQL is the same summary computed without writing (dry run).
func planHourStatsSQL() string {
	return `SELECT r.currency, r.problem, COUNT(*), SUM(r.amount) FROM (` + ratingRows(aggHour) + `) r
GROUP BY r.currency, r.problem`
}

// planHourProblemsSQL lists the keys of an hour that would stay unrated (dry run).
func planHourProblemsSQL() string {
	return `SELECT r.account_id, r.product, r.currency, r.problem FROM (` + ratingRows(aggHour) + `) r
WHERE r.problem IS NOT NULL`
}

// setWatermarkSQL records the last hour rated; args (hour, updated_at).
const setWatermarkSQL = `INSERT INTO billing_state (name, hour_watermark, updated_at) VALUES ('rating', ?, ?)
ON DUPLICATE KEY UPDATE hour_watermark = VALUES(hour_watermark), updated_at = VALUES(updated_at)`

// setLateScanSQL records where the next late-usage scan starts; args (from, updated_at).
const setLateScanSQL = `INSERT INTO billing_state (name, late_scan_from, updated_at) VALUES ('rating', ?, ?)
ON DUPLICATE KEY UPDATE late_scan_from = VALUES(late_scan_from), updated_at = VALUES(updated_at)`

// compareSQL recomputes the keys of one hour selected by agg and returns those whose
// stored charge differs (or is missing), with whether the account's month is
// already invoiced. Args: (period_start), agg's args, (hour, hour), (hour).
func compareSQL(agg string) string {
	return `SELECT r.account_id, r.product, r.quantity, r.amount, r.currency, r.problem,
  c.id IS NOT NULL, c.quantity, c.amount, c.currency, c.problem,
  c.invoice_id IS NOT NULL OR EXISTS (SELECT 1 FROM invoices i WHERE i.account_id = r.account_id AND i.period_start = ?)
FROM (` + ratingRows(agg) + `) r
LEFT JOIN charges c ON c.account_id = r.account_id AND c.product = r.product AND c.hour = ?
WHERE c.id IS NULL OR NOT (` + sameCharge + `)
ORDER BY r.account_id, r.product`
}

// applySQL writes what compareSQL found, except into invoiced months (those are
// reported instead). Args: (hour, rated_at), agg's args, (hour, hour), (hour),
// (period_start).
func applySQL(agg string) string {
	return `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, problem, rated_at)
SELECT r.account_id, r.product, ?, r.quantity, r.unit_price, r.amount, r.currency, r.status, r.problem, ?
FROM (` + ratingRows(agg) + `) r
LEFT JOIN charges c ON c.account_id = r.account_id AND c.product = r.product AND c.hour = ?
WHERE (c.id IS NULL OR (c.invoice_id IS NULL AND NOT (` + sameCharge + `)))
  AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.account_id = r.account_id AND i.period_start = ?)
ON DUPLICATE KEY UPDATE
  charges.quantity = VALUES(quantity), charges.unit_price = VALUES(unit_price), charges.amount = VALUES(amount),
  charges.currency = VALUES(currency), charges.status = VALUES(status), charges.problem = VALUES(problem),
  charges.rated_at = VALUES(rated_at)`
}

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
