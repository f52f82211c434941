package billing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

// lateMargin widens each late-usage scan backwards: a metering transaction stamped
// recorded_at when its statement ran but committed later; ten minutes covers any
// transaction the agents keep open.
const lateMargin = 10 * time.Minute

// ratingState is billing_state's 'rating' row.
type ratingState struct {
	watermark    sql.NullTime // the last hour rated
	lateScanFrom sql.NullTime // DB time the last completed late scan started
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func loadRatingState(ctx context.Context, q queryer) (ratingState, error) {
	var st ratingState
	err := q.QueryRowContext(ctx, `SELECT hour_watermark, late_scan_from FROM billing_state WHERE name = 'rating'`).
		Scan(&st.watermark, &st.lateScanFrom)
	if errors.Is(err, sql.ErrNoRows) {
		return ratingState{}, nil
	}
	if err != nil {
		return st, fmt.Errorf("load rating state: %w", err)
	}
	return st, nil
}

// Rate rates every closed hour after the watermark, re-rates late usage and
// previously unrated charges, and reports what stays unrated. With Config.Account it
// only recomputes that account's un-invoiced charges and never moves the watermark.
func (j *Job) Rate(ctx context.Context) (*run.Report, error) {
	r := &rater{j: j, rep: run.NewReport("billing"), now: j.now(), log: zerolog.Ctx(ctx), seen: map[chargeKey]bool{}}
	if j.Config.DryRun {
		r.plan = map[chargeKey]unratedKey{}
	}
	err := r.run(ctx)
	return r.rep, err
}

// rater is one rating phase.
type rater struct {
	j   *Job
	rep *run.Report
	now time.Time
	log *zerolog.Logger
	st  ratingState
	// plan is the dry run's view of which charges would be unrated at the end,
	// started from the stored ones and updated as the plan goes.
	plan map[chargeKey]unratedKey
	// seen is the keys already reported, so that the retry of unrated charges does
	// not report again what the late scan did: keys left alone in invoiced months
	// and, in a dry run (which writes nothing), every key re-rated.
	seen     map[chargeKey]bool
	rerated  capped
	lateShut capped
}

type chargeKey struct {
	account int64
	product string
	hour    time.Time
}

type unratedKey struct {
	currency sql.NullString
	problem  string
}

func (r *rater) run(ctx context.Context) error {
	var err error
	if r.st, err = loadRatingState(ctx, r.j.DB); err != nil {
		return err
	}
	if err := r.reportOverlaps(ctx); err != nil {
		return err
	}
	if r.plan != nil {
		if err := r.loadUnrated(ctx); err != nil {
			return err
		}
	}
	if r.j.Config.Account != 0 {
		if err := r.recomputeAccount(ctx); err != nil {
			return err
		}
	} else {
		if err := r.lateScan(ctx); err != nil {
			return err
		}
		if err := r.retryUnrated(ctx); err != nil {
			return err
		}
		if err := r.rateNewHours(ctx); err != nil {
			return err
		}
	}
	if more := r.rerated.more(); more > 0 {
		r.rep.Act("rerate", "more keys", fmt.Sprintf("%d more re-rated keys not listed", more),
			run.Int("not_listed", int64(more)))
	}
	if more := r.lateShut.more(); more > 0 {
		r.rep.Problem("late_usage_after_close", "more keys", fmt.Sprintf("%d more keys not listed", more),
			run.Int("not_listed", int64(more)))
	}
	return r.reportUnrated(ctx)
}

// reportOverlaps reports price rows that overlap: rating still picks one (the latest
// valid_from), but someone must fix the price list.
func (r *rater) reportOverlaps(ctx context.Context) error {
	rows, err := r.j.DB.QueryContext(ctx, priceOverlapsSQL)
	if err != nil {
		return fmt.Errorf("check price overlaps: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var product, currency string
		var id1, id2 int64
		var from time.Time
		if err := rows.Scan(&product, &currency, &id1, &id2, &from); err != nil {
			return fmt.Errorf("check price overlaps: %w", err)
		}
		r.rep.Problem("price_overlap", fmt.Sprintf("prices %s %s", product, currency),
			fmt.Sprintf("rows %d and %d are both valid from %s; rating uses the later valid_from", id1, id2, fmtHour(from)),
			run.Str("product", product), run.Str("currency", currency), run.Int("price_id", id1),
			run.Int("overlapping_price_id", id2), run.Time("valid_from", from))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check price overlaps: %w", err)
	}
	return nil
}

// rateNewHours rates each closed hour after the watermark, oldest first, one
// transaction per hour that also moves the watermark, and stops between hours when
// the context ends (the next run continues from the last committed hour).
func (r *rater) rateNewHours(ctx context.Context) error {
	cutoff := floorHour(r.now.Add(-r.j.settleDelay())) // hours before it are closed and settled
	last := cutoff.Add(-time.Hour)
	var start time.Time
	if r.st.watermark.Valid {
		start = r.st.watermark.Time.Add(time.Hour)
	} else {
		var oldest sql.NullTime
		if err := r.j.DB.QueryRowContext(ctx, `SELECT MIN(hour) FROM usage_records`).Scan(&oldest); err != nil {
			return fmt.Errorf("find oldest usage: %w", err)
		}
		if !oldest.Valid {
			return nil // nothing metered yet
		}
		start = floorHour(oldest.Time)
	}
	if !start.Before(cutoff) {
		return nil
	}
	total := int64(cutoff.Sub(start) / time.Hour)
	progress := run.ProgressFrom(ctx)
	progress.Step("rating hours", 0, total)
	from := "none"
	if r.st.watermark.Valid {
		from = fmtHour(r.st.watermark.Time)
	}
	var hours, charges, unrated int64
	h := start
	for {
		if ctx.Err() != nil {
			return fmt.Errorf("rating stopped before %s: %w", fmtHour(h), cause(ctx))
		}
		next, ok, err := r.nextUsageHour(ctx, h, cutoff)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		var stats hourStats
		if r.plan != nil {
			stats, err = r.planHour(ctx, next)
		} else {
			stats, err = r.j.rateHour(ctx, next, r.now)
		}
		if err != nil {
			return err
		}
		r.rep.Act("rate", "hour "+fmtHour(next), stats.String(), stats.fields(next)...)
		r.rep.Count("hours_rated", 1)
		r.rep.Count("charges_rated", stats.rated)
		r.rep.Count("charges_unrated", stats.unratedTotal())
		hours, charges, unrated = hours+1, charges+stats.rated+stats.unratedTotal(), unrated+stats.unratedTotal()
		msg := "hour rated"
		if r.plan != nil {
			msg = "hour planned"
		}
		r.log.WithLevel(run.ItemLevel(ctx)).Str("hour", fmtHour(next)).Int64("charges", stats.rated+stats.unratedTotal()).
			Int64("unrated", stats.unratedTotal()).Msg(msg)
		progress.Step("rating hours", int64(next.Sub(start)/time.Hour)+1, total)
		h = next.Add(time.Hour)
	}
	// Hours with no usage up to the cutoff are rated too: nothing to charge.
	if r.plan == nil {
		if err := mysql.InTx(ctx, r.j.DB, nil, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, setWatermarkSQL, last, r.now)
			return err
		}); err != nil {
			return fmt.Errorf("move watermark to %s: %w", fmtHour(last), err)
		}
	}
	wmFields := []run.Field{run.Time("to", last)}
	if r.st.watermark.Valid {
		wmFields = append([]run.Field{run.Time("from", r.st.watermark.Time)}, wmFields...)
	}
	r.rep.Act("watermark", "rating", fmt.Sprintf("%s -> %s", from, fmtHour(last)), wmFields...)
	progress.Step("rating hours", total, total)
	// The phase in one line: per-hour lines are debug on a terminal.
	r.log.Info().Str("from", fmtHour(start)).Str("to", fmtHour(last)).Int64("hours", total).Int64("hours_with_usage", hours).
		Int64("charges", charges).Int64("unrated", unrated).Msg("rating caught up")
	return nil
}

// nextUsageHour is the first hour in [from, before) with usage, so that a week of
// empty hours costs one query, not 168 transactions.
func (r *rater) nextUsageHour(ctx context.Context, from, before time.Time) (time.Time, bool, error) {
	var h sql.NullTime
	err := r.j.DB.QueryRowContext(ctx, `SELECT MIN(hour) FROM usage_records WHERE hour >= ? AND hour < ?`, from, before).Scan(&h)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("find next hour with usage after %s: %w", fmtHour(from), err)
	}
	if !h.Valid {
		return time.Time{}, false, nil
	}
	return floorHour(h.Time), true, nil
}

// rateHour writes hour h's charges and moves the watermark to h, in one
// transaction: a crash leaves either both or neither.
func (j *Job) rateHour(ctx context.Context, h, now time.Time) (hourStats, error) {
	var stats hourStats
	err := mysql.InTx(ctx, j.DB, nil, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, insertHourSQL(), h, now, h, h, h); err != nil {
			return fmt.Errorf("insert charges: %w", err)
		}
		var err error
		if stats, err = readHourStats(ctx, tx, hourStatsSQL, h); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, setWatermarkSQL, h, now); err != nil {
			return fmt.Errorf("move watermark: %w", err)
		}
		return nil
	})
	if err != nil {
		return stats, fmt.Errorf("rate hour %s: %w", fmtHour(h), err)
	}
	return stats, nil
}

// planHour computes what rateHour would write, with SELECTs only.
func (r *rater) planHour(ctx context.Context, h time.Time) (hourStats, error) {
	stats, err := readHourStats(ctx, r.j.DB, planHourStatsSQL(), h, h, h)
	if err != nil {
		return stats, fmt.Errorf("plan hour %s: %w", fmtHour(h), err)
	}
	rows, err := r.j.DB.QueryContext(ctx, planHourProblemsSQL(), h, h, h)
	if err != nil {
		return stats, fmt.Errorf("plan hour %s: %w", fmtHour(h), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k chargeKey
		var u unratedKey
		if err := rows.Scan(&k.account, &k.product, &u.currency, &u.problem); err != nil {
			return stats, fmt.Errorf("plan hour %s: %w", fmtHour(h), err)
		}
		k.hour = h
		r.plan[k] = u
	}
	return stats, rows.Err()
}

// hourStats summarises an hour's charges: rated ones per currency, unrated ones per
// problem.
type hourStats struct {
	rated    int64
	amounts  map[string]Micros
	problems map[string]int64
}

// fields are the report fields of the rating of hour h: the hour (a Seq, so the text
// report folds a catch-up into one line), its charges and their amounts per currency.
func (s hourStats) fields(h time.Time) []run.Field {
	amounts := make(map[string]string, len(s.amounts))
	for c, m := range s.amounts {
		amounts[c] = m.String()
	}
	return []run.Field{run.Seq("hour", h), run.Tally("charges", s.rated+s.unratedTotal()),
		run.Tally("unrated", s.unratedTotal()), run.Amounts("amounts", amounts)}
}

func (s hourStats) unratedTotal() int64 {
	var n int64
	for _, c := range s.problems {
		n += c
	}
	return n
}

// String is the report line: "3 charges: EUR 1.200000, USD 0.500000; unrated:
// unpriced 1".
func (s hourStats) String() string {
	var b strings.Builder
	b.WriteString(plural(s.rated+s.unratedTotal(), "charge"))
	if len(s.amounts) > 0 {
		cur := make([]string, 0, len(s.amounts))
		for c := range s.amounts {
			cur = append(cur, c)
		}
		sort.Strings(cur)
		for i, c := range cur {
			sep := ", "
			if i == 0 {
				sep = ": "
			}
			fmt.Fprintf(&b, "%s%s %s", sep, c, s.amounts[c])
		}
	}
	if len(s.problems) > 0 {
		ps := make([]string, 0, len(s.problems))
		for p := range s.problems {
			ps = append(ps, p)
		}
		sort.Strings(ps)
		b.WriteString("; unrated:")
		for _, p := range ps {
			fmt.Fprintf(&b, " %s %d", p, s.problems[p])
		}
	}
	return b.String()
}

func readHourStats(ctx context.Context, q queryer, query string, args ...any) (hourStats, error) {
	s := hourStats{amounts: map[string]Micros{}, problems: map[string]int64{}}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return s, fmt.Errorf("summarise hour: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var currency, problem, sum sql.NullString
		var n int64
		if err := rows.Scan(&currency, &problem, &n, &sum); err != nil {
			return s, fmt.Errorf("summarise hour: %w", err)
		}
		if problem.Valid {
			s.problems[problem.String] += n
			continue
		}
		amt, err := scanMicros(sum)
		if err != nil {
			return s, fmt.Errorf("summarise hour: %w", err)
		}
		s.rated += n
		if s.amounts[currency.String], err = s.amounts[currency.String].Add(amt); err != nil {
			return s, err
		}
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("summarise hour: %w", err)
	}
	return s, nil
}

// lateScan re-rates the keys of already-rated hours whose usage was recorded (or
// corrected) since the last scan began, minus a margin for transactions in flight.
// It recomputes each key's total from usage_records, so a scan that overlaps the
// previous one changes nothing.
func (r *rater) lateScan(ctx context.Context) error {
	var scanStart time.Time
	if err := r.j.DB.QueryRowContext(ctx, `SELECT NOW(6)`).Scan(&scanStart); err != nil {
		return fmt.Errorf("late usage scan: %w", err)
	}
	if r.st.watermark.Valid {
		since := farPast()
		if r.st.lateScanFrom.Valid {
			since = r.st.lateScanFrom.Time.Add(-lateMargin)
		}
		hours, err := queryHours(ctx, r.j.DB, `SELECT DISTINCT hour FROM usage_records
WHERE recorded_at >= ? AND hour <= ? ORDER BY hour`, since, r.st.watermark.Time)
		if err != nil {
			return fmt.Errorf("late usage scan: %w", err)
		}
		run.ProgressFrom(ctx).Step("late usage hours", 0, int64(len(hours)))
		for i, h := range hours {
			if ctx.Err() != nil {
				return fmt.Errorf("late usage scan stopped before %s: %w", fmtHour(h), cause(ctx))
			}
			if err := r.recompute(ctx, h, aggLate, []any{h, since, h}, "late usage"); err != nil {
				return err
			}
			run.ProgressFrom(ctx).Step("late usage hours", int64(i+1), int64(len(hours)))
		}
	}
	if r.plan != nil {
		return nil
	}
	if _, err := r.j.DB.ExecContext(ctx, setLateScanSQL, scanStart, r.now); err != nil {
		return fmt.Errorf("record late usage scan: %w", err)
	}
	return nil
}

// retryUnrated re-evaluates every unrated charge: a price, an account or a corrected
// quantity may have arrived since.
func (r *rater) retryUnrated(ctx context.Context) error {
	hours, err := queryHours(ctx, r.j.DB, `SELECT DISTINCT hour FROM charges WHERE status = 'unrated' ORDER BY hour`)
	if err != nil {
		return fmt.Errorf("retry unrated charges: %w", err)
	}
	for _, h := range hours {
		if ctx.Err() != nil {
			return fmt.Errorf("retry of unrated charges stopped before %s: %w", fmtHour(h), cause(ctx))
		}
		if err := r.recompute(ctx, h, aggUnrated, []any{h, h}, "was unrated"); err != nil {
			return err
		}
	}
	return nil
}

// recomputeAccount is `rate --account`: every hour up to the watermark in which the
// account has usage or un-invoiced charges, recomputed (months already invoiced for
// it are skipped: their differences would only be reported).
func (r *rater) recomputeAccount(ctx context.Context) error {
	if !r.st.watermark.Valid {
		return nil
	}
	acct, wm := r.j.Config.Account, r.st.watermark.Time
	invoiced := map[time.Time]bool{}
	months, err := queryHours(ctx, r.j.DB, `SELECT period_start FROM invoices WHERE account_id = ?`, acct)
	if err != nil {
		return fmt.Errorf("recompute account %d: %w", acct, err)
	}
	for _, m := range months {
		invoiced[monthStart(m)] = true
	}
	hours, err := queryHours(ctx, r.j.DB, `SELECT hour FROM usage_records WHERE account_id = ? AND hour <= ?
UNION SELECT hour FROM charges WHERE account_id = ? AND invoice_id IS NULL AND hour <= ?
ORDER BY hour`, acct, wm, acct, wm)
	if err != nil {
		return fmt.Errorf("recompute account %d: %w", acct, err)
	}
	run.ProgressFrom(ctx).Step("recomputing hours", 0, int64(len(hours)))
	for i, h := range hours {
		if invoiced[monthStart(h)] {
			continue
		}
		if ctx.Err() != nil {
			return fmt.Errorf("recompute of account %d stopped before %s: %w", acct, fmtHour(h), cause(ctx))
		}
		if err := r.recompute(ctx, h, aggHourAccount, []any{h, acct}, "recomputed"); err != nil {
			return err
		}
		run.ProgressFrom(ctx).Step("recomputing hours", int64(i+1), int64(len(hours)))
	}
	return nil
}

func queryHours(ctx context.Context, q queryer, query string, args ...any) ([]time.Time, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hours []time.Time
	for rows.Next() {
		var h time.Time
		if err := rows.Scan(&h); err != nil {
			return nil, err
		}
		hours = append(hours, h.UTC())
	}
	return hours, rows.Err()
}

// recompute re-rates the keys of hour h that agg selects: it lists those whose
// stored charge differs, reports each, and (unless dry run) writes them in the same
// transaction, except into months already invoiced for the account, which it
// reports as late_usage_after_close instead.
func (r *rater) recompute(ctx context.Context, h time.Time, agg string, aggArgs []any, reason string) error {
	period := monthStart(h)
	cmpArgs := append(append([]any{period}, aggArgs...), h, h, h)
	work := func(q queryer) (int, error) {
		rows, err := q.QueryContext(ctx, compareSQL(agg), cmpArgs...)
		if err != nil {
			return 0, err
		}
		defer rows.Close()
		writes := 0
		for rows.Next() {
			var d diffRow
			if err := rows.Scan(&d.account, &d.product, &d.quantity, &d.amount, &d.currency, &d.problem,
				&d.exists, &d.oldQuantity, &d.oldAmount, &d.oldCurrency, &d.oldProblem, &d.closed); err != nil {
				return 0, err
			}
			k := chargeKey{account: d.account, product: d.product, hour: h}
			if r.seen[k] {
				continue
			}
			subject := fmt.Sprintf("account %d %s %s", d.account, d.product, fmtHour(h))
			if d.closed {
				r.seen[k] = true
				r.rep.Count("late_usage_after_close", 1)
				if r.lateShut.ok() {
					r.rep.Problem("late_usage_after_close", subject,
						fmt.Sprintf("period %s is invoiced; %s not billed", period.Format("2006-01"), d.change()),
						append(d.fields(h), run.Str("period", period.Format("2006-01")))...)
				}
				continue
			}
			writes++
			why := reason
			if d.oldProblem.Valid {
				why = "was " + d.oldProblem.String
			} else if !d.exists {
				why = reason + ", new key"
			}
			r.rep.Count("charges_rerated", 1)
			if r.rerated.ok() {
				r.rep.Act("rerate", subject, why+"; "+d.change(), append(d.fields(h), run.Str("reason", why))...)
			}
			if r.plan != nil {
				r.seen[k] = true
				if d.problem.Valid {
					r.plan[k] = unratedKey{currency: d.currency, problem: d.problem.String}
				} else {
					delete(r.plan, k)
				}
			}
			run.Item(ctx).Int64("account_id", d.account).Str("product", d.product).
				Str("hour", fmtHour(h)).Str("reason", why).Str("change", d.change()).Msg("charge re-rated")
		}
		return writes, rows.Err()
	}
	if r.plan != nil {
		if _, err := work(r.j.DB); err != nil {
			return fmt.Errorf("plan re-rating of %s: %w", fmtHour(h), err)
		}
		return nil
	}
	err := mysql.InTx(ctx, r.j.DB, nil, func(tx *sql.Tx) error {
		writes, err := work(tx)
		if err != nil || writes == 0 {
			return err
		}
		args := append(append([]any{h, r.now}, aggArgs...), h, h, h, period)
		_, err = tx.ExecContext(ctx, applySQL(agg), args...)
		return err
	})
	if err != nil {
		return fmt.Errorf("re-rate %s: %w", fmtHour(h), err)
	}
	return nil
}

// diffRow is a recomputed charge and the stored one it differs from.
type diffRow struct {
	account                   int64
	product                   string
	quantity                  string
	amount, currency, problem sql.NullString
	exists                    bool
	oldQuantity, oldAmount    sql.NullString
	oldCurrency, oldProblem   sql.NullString
	closed                    bool
}

// fields are the report fields of the recomputed key of hour h: the new quantity and
// amount (or the problem leaving it unrated) beside the stored ones, each present
// only when there is one (a new key has no old_*).
func (d diffRow) fields(h time.Time) []run.Field {
	f := []run.Field{run.Int("account_id", d.account), run.Str("product", d.product), run.Time("hour", h),
		run.Str("quantity", d.quantity)}
	switch {
	case d.problem.Valid:
		f = append(f, run.Str("problem", d.problem.String))
	case d.amount.Valid:
		f = append(f, run.Money("amount", d.amount.String, d.currency.String)...)
	}
	if !d.exists {
		return f
	}
	if d.oldQuantity.Valid {
		f = append(f, run.Str("old_quantity", d.oldQuantity.String))
	}
	switch {
	case d.oldProblem.Valid:
		f = append(f, run.Str("old_problem", d.oldProblem.String))
	case d.oldAmount.Valid:
		f = append(f, run.Str("old_amount", d.oldAmount.String), run.Str("old_currency", d.oldCurrency.String))
	}
	return f
}

// change is "quantity 1.000000 -> 2.000000, amount USD 0.100000 -> USD 0.200000".
func (d diffRow) change() string {
	money := func(amount, currency, problem sql.NullString) string {
		if problem.Valid {
			return "unrated (" + problem.String + ")"
		}
		if !amount.Valid {
			return "none"
		}
		return currency.String + " " + amount.String
	}
	oldQ, oldM := "none", "none"
	if d.exists {
		oldQ, oldM = nullStr(d.oldQuantity), money(d.oldAmount, d.oldCurrency, d.oldProblem)
	}
	return fmt.Sprintf("quantity %s -> %s, amount %s -> %s", oldQ, d.quantity, oldM, money(d.amount, d.currency, d.problem))
}

// loadUnrated starts a dry run's plan from the charges stored as unrated.
func (r *rater) loadUnrated(ctx context.Context) error {
	query, args := unratedKeysSQL, []any(nil)
	if r.j.Config.Account != 0 {
		query, args = unratedKeysAccountSQL, []any{r.j.Config.Account}
	}
	rows, err := r.j.DB.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("load unrated charges: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k chargeKey
		var u unratedKey
		var problem sql.NullString
		if err := rows.Scan(&k.account, &k.product, &k.hour, &u.currency, &problem); err != nil {
			return fmt.Errorf("load unrated charges: %w", err)
		}
		k.hour = k.hour.UTC()
		u.problem = nullStr(problem)
		r.plan[k] = u
	}
	return rows.Err()
}

// unratedGroup is the report line for one account's product with the same problem.
type unratedGroup struct {
	problem  string
	account  int64
	product  string
	currency sql.NullString
	hours    int64
	first    time.Time
	last     time.Time
}

// reportUnrated reports every charge still unrated (after this run, or in a dry run
// after the plan), one problem per account, product and problem, so a missing price
// is one line, not one per hour.
func (r *rater) reportUnrated(ctx context.Context) error {
	var groups []unratedGroup
	if r.plan != nil {
		byKey := map[string]*unratedGroup{}
		for k, u := range r.plan {
			id := fmt.Sprintf("%s\x00%d\x00%s\x00%s", u.problem, k.account, k.product, u.currency.String)
			g := byKey[id]
			if g == nil {
				g = &unratedGroup{problem: u.problem, account: k.account, product: k.product, currency: u.currency, first: k.hour, last: k.hour}
				byKey[id] = g
			}
			g.hours++
			if k.hour.Before(g.first) {
				g.first = k.hour
			}
			if k.hour.After(g.last) {
				g.last = k.hour
			}
		}
		for _, g := range byKey {
			groups = append(groups, *g)
		}
	} else {
		query, args := unratedSQL, []any(nil)
		if r.j.Config.Account != 0 {
			query, args = unratedAccountSQL, []any{r.j.Config.Account}
		}
		rows, err := r.j.DB.QueryContext(ctx, query, args...)
		if err != nil {
			return fmt.Errorf("report unrated charges: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var g unratedGroup
			var problem sql.NullString
			if err := rows.Scan(&problem, &g.account, &g.product, &g.currency, &g.hours, &g.first, &g.last); err != nil {
				return fmt.Errorf("report unrated charges: %w", err)
			}
			g.problem = nullStr(problem)
			groups = append(groups, g)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("report unrated charges: %w", err)
		}
	}
	sort.Slice(groups, func(a, b int) bool {
		x, y := groups[a], groups[b]
		if x.problem != y.problem {
			return x.problem < y.problem
		}
		if x.account != y.account {
			return x.account < y.account
		}
		if x.product != y.product {
			return x.product < y.product
		}
		return x.currency.String < y.currency.String
	})
	var c capped
	for _, g := range groups {
		r.rep.Count("unrated_keys", g.hours)
		if !c.ok() {
			continue
		}
		why := map[string]string{
			"unknown_account":   "no such account",
			"negative_quantity": "a usage record is negative",
			"unpriced":          "no " + g.currency.String + " price",
		}[g.problem]
		if why == "" {
			why = g.problem
		}
		span := fmtHour(g.first)
		if g.last.After(g.first) {
			span += " to " + fmtHour(g.last)
		}
		fields := []run.Field{run.Int("account_id", g.account), run.Str("product", g.product)}
		if g.currency.Valid {
			fields = append(fields, run.Str("currency", g.currency.String))
		}
		fields = append(fields, run.Int("hours", g.hours), run.Time("from", g.first), run.Time("to", g.last))
		r.rep.Problem(g.problem, fmt.Sprintf("account %d %s", g.account, g.product),
			fmt.Sprintf("%s; %s unrated, %s", why, plural(g.hours, "hour"), span), fields...)
	}
	if more := c.more(); more > 0 {
		r.rep.Problem("unrated", "more keys", fmt.Sprintf("%d more unrated account/product groups not listed", more),
			run.Int("not_listed", int64(more)))
	}
	return nil
}
