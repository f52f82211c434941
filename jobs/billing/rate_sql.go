package billing

import "fmt"

// The rating SQL. Every way of rating (a new hour, late usage, a retry of unrated
// charges, one account) is the same SELECT over a different usage aggregation, so a
// charge is computed the same way whichever path wrote it, and recomputing is
// idempotent. The fragments are constants; only values travel as parameters.

// Usage aggregations: one row per hour, account and product, with the total (q) and
// the smallest record (minq, to find negative quantities).
const (
	// aggHours is every key of the hours [from, to); args (from, to). Index-only on
	// usage_hour and grouped in index order, so no temporary table however many
	// hours a catch-up puts in one statement.
	aggHours = `SELECT hour, account_id, product, SUM(quantity) AS q, MIN(quantity) AS minq
    FROM usage_records WHERE hour >= ? AND hour < ? GROUP BY hour, account_id, product`
	// aggHourAccount is one account's usage of an hour; args (hour, account).
	aggHourAccount = `SELECT hour, account_id, product, SUM(quantity) AS q, MIN(quantity) AS minq
    FROM usage_records WHERE hour = ? AND account_id = ? GROUP BY hour, account_id, product`
	// aggLate is the keys, in hours up to the watermark, with usage recorded (inserted
	// or corrected) since the scan's mark, totalled over ALL their usage; args (mark,
	// watermark). The keys come from one range of usage_recorded, read from the index
	// alone: a bulk load over many hours costs one pass, not one per hour.
	aggLate = `SELECT ur.hour, ur.account_id, ur.product, SUM(ur.quantity) AS q, MIN(ur.quantity) AS minq
    FROM (SELECT DISTINCT hour, account_id, product FROM usage_records WHERE recorded_at >= ? AND hour <= ?) k
    JOIN usage_records ur ON ur.hour = k.hour AND ur.account_id = k.account_id AND ur.product = k.product
    GROUP BY ur.hour, ur.account_id, ur.product`
	// aggUnrated is the keys whose charge is unrated; no args.
	aggUnrated = `SELECT ur.hour, ur.account_id, ur.product, SUM(ur.quantity) AS q, MIN(ur.quantity) AS minq
    FROM (SELECT hour, account_id, product FROM charges WHERE status = 'unrated') k
    JOIN usage_records ur ON ur.hour = k.hour AND ur.account_id = k.account_id AND ur.product = k.product
    GROUP BY ur.hour, ur.account_id, ur.product`
)

// priceSegments is the price list as non-overlapping segments [seg_from, seg_to) per
// product and currency, each with the one price rating uses inside it: the latest
// valid_from among the rows valid at the segment's start, then the highest id. The
// rows valid at an instant change only at a valid_from or valid_to, and segments run
// from one such boundary to the next, so the price chosen at a segment's start holds
// for every hour in it. Being independent of the hour, it prices one hour or a
// thousand in the same statement; the price list is small, so computing it per
// statement costs nothing.
const priceSegments = `SELECT s.product, s.currency, s.seg_from, s.seg_to,
    (SELECT pr.unit_price FROM prices pr WHERE pr.product = s.product AND pr.currency = s.currency
       AND pr.valid_from <= s.seg_from AND (pr.valid_to IS NULL OR pr.valid_to > s.seg_from)
     ORDER BY pr.valid_from DESC, pr.id DESC LIMIT 1) AS unit_price
  FROM (
    SELECT b.product, b.currency, b.t AS seg_from, LEAD(b.t) OVER (PARTITION BY b.product, b.currency ORDER BY b.t) AS seg_to
    FROM (SELECT product, currency, valid_from AS t FROM prices
          UNION SELECT product, currency, valid_to FROM prices WHERE valid_to IS NOT NULL) b) s`

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

// ratingRows prices an aggregation: the account's currency, the price of the segment
// holding the hour, the amount, and the problem that keeps a row unrated. Every
// value of a usage row, however extreme, gives a row that fits charges. Args: the
// aggregation's.
func ratingRows(agg string) string {
	return fmt.Sprintf(`SELECT x.hour, x.account_id, x.product,
  IF(x.problem <=> 'quantity_out_of_range', NULL, x.quantity) AS quantity,
  IF(x.problem IS NULL, x.unit_price, NULL) AS unit_price,
  IF(x.problem IS NULL, x.amount, NULL) AS amount,
  x.currency,
  IF(x.problem IS NULL, 'rated', 'unrated') AS status,
  x.problem
FROM (
  SELECT u.hour, u.account_id, u.product, u.q AS quantity, a.currency, p.unit_price,
    ROUND(u.q * p.unit_price, 6) AS amount,
    CASE WHEN ABS(u.q) > %[2]s THEN 'quantity_out_of_range'
         WHEN a.id IS NULL THEN 'unknown_account'
         WHEN u.minq < 0 THEN 'negative_quantity'
         WHEN p.unit_price IS NULL THEN 'unpriced'
         WHEN ABS(ROUND(u.q * p.unit_price, 6)) > %[3]s THEN 'amount_out_of_range' END AS problem
  FROM (%[1]s) u
  LEFT JOIN accounts a ON a.id = u.account_id
  LEFT JOIN (%[4]s) p ON p.product = u.product AND p.currency = a.currency
    AND p.seg_from <= u.hour AND (p.seg_to IS NULL OR p.seg_to > u.hour)
) x`, agg, maxQuantity, maxAmount, priceSegments)
}

// sameCharge is true when the stored charge c already says what the recomputation r
// says.
const sameCharge = `c.quantity <=> r.quantity AND c.unit_price <=> r.unit_price AND c.amount <=> r.amount
    AND c.currency <=> r.currency AND c.status <=> r.status AND c.problem <=> r.problem`

// insertHoursSQL rates the new hours [from, to). The upsert only matters when ops
// moved the watermark back to re-rate: charges already on an invoice are then left
// alone. Args: (rated_at, from, to).
func insertHoursSQL() string {
	return `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, problem, rated_at)
SELECT r.account_id, r.product, r.hour, r.quantity, r.unit_price, r.amount, r.currency, r.status, r.problem, ?
FROM (` + ratingRows(aggHours) + `) r
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
// hour; args (from, to).
const hourStatsSQL = `SELECT hour, currency, problem, COUNT(*), SUM(amount) FROM charges WHERE hour >= ? AND hour < ?
GROUP BY hour, currency, problem`

// planHourStatsSQL is the same summary computed without writing (dry run); args
// (from, to).
func planHourStatsSQL() string {
	return `SELECT r.hour, r.currency, r.problem, COUNT(*), SUM(r.amount) FROM (` + ratingRows(aggHours) + `) r
GROUP BY r.hour, r.currency, r.problem`
}

// planHourProblemsSQL lists the keys of the hours [from, to) that would stay
// unrated (dry run); args (from, to).
func planHourProblemsSQL() string {
	return `SELECT r.hour, r.account_id, r.product, r.currency, r.problem FROM (` + ratingRows(aggHours) + `) r
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

// compareSQL recomputes the keys agg selects and returns those whose stored charge
// differs (or is missing), with whether the account's month is already invoiced, in
// hour, account and product order. Args: agg's.
func compareSQL(agg string) string {
	return `SELECT r.hour, r.account_id, r.product, r.quantity, r.amount, r.currency, r.problem,
  c.id IS NOT NULL, c.quantity, c.amount, c.currency, c.problem,
  c.invoice_id IS NOT NULL OR ` + invoicedMonth + `
FROM (` + ratingRows(agg) + `) r
LEFT JOIN charges c ON c.account_id = r.account_id AND c.product = r.product AND c.hour = r.hour
WHERE c.id IS NULL OR NOT (` + sameCharge + `)
ORDER BY r.hour, r.account_id, r.product`
}

// applySQL writes what compareSQL found, except into invoiced months (those are
// reported instead). Args: (rated_at), agg's.
func applySQL(agg string) string {
	return `INSERT INTO charges (account_id, product, hour, quantity, unit_price, amount, currency, status, problem, rated_at)
SELECT r.account_id, r.product, r.hour, r.quantity, r.unit_price, r.amount, r.currency, r.status, r.problem, ?
FROM (` + ratingRows(agg) + `) r
LEFT JOIN charges c ON c.account_id = r.account_id AND c.product = r.product AND c.hour = r.hour
WHERE (c.id IS NULL OR (c.invoice_id IS NULL AND NOT (` + sameCharge + `)))
  AND NOT ` + invoicedMonth + `
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
