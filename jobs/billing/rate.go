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

// ratingState is billing_state's 'rating' row.
type ratingState struct {
	watermark    sql.NullTime // the last hour rated
	lateScanFrom sql.NullTime // the late-usage scan's mark: where the next scan starts
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
	report := func(stats []hourStats) {
		for _, st := range stats {
			r.rep.Act("rate", "hour "+fmtHour(st.hour), st.String(), st.fields(st.hour)...)
			r.rep.Count("hours_rated", 1)
			r.rep.Count("charges_rated", st.rated)
			r.rep.Count("charges_unrated", st.unratedTotal())
			hours, charges, unrated = hours+1, charges+st.rated+st.unratedTotal(), unrated+st.unratedTotal()
			msg := "hour rated"
			if r.plan != nil {
				msg = "hour planned"
			}
			r.log.WithLevel(run.ItemLevel(ctx)).Str("hour", fmtHour(st.hour)).Int64("charges", st.rated+st.unratedTotal()).
				Int64("unrated", st.unratedTotal()).Msg(msg)
		}
	}
	// While one chunk is written, a second connection summarises the chunk written
	// before it and sizes the next one: those reads were a tenth of a catch-up's
	// time, and the server has a core for them while the INSERT runs on another.
	c, more, err := r.nextChunk(ctx, start, cutoff)
	if err != nil {
		return err
	}
	var written *ratedChunk // committed, not yet summarised
	for more {
		if ctx.Err() != nil {
			return fmt.Errorf("rating stopped before %s: %w", fmtHour(c.from), cause(ctx))
		}
		ahead := make(chan readAhead, 1)
		go func(prev *ratedChunk, after time.Time) {
			var a readAhead
			if prev != nil {
				a.stats, a.err = r.j.summarise(ctx, *prev)
			}
			if a.err == nil {
				a.next, a.more, a.err = r.nextChunk(ctx, after, cutoff)
			}
			ahead <- a
		}(written, c.to)
		var stats []hourStats
		var w ratedChunk
		if r.plan != nil {
			stats, err = r.planHours(ctx, c.from, c.to)
		} else {
			w, err = r.j.rateHours(ctx, c.from, c.to, r.now)
		}
		a := <-ahead
		if written != nil {
			report(a.stats) // the chunk before this one (none when reading it failed)
			progress.Step("rating hours", int64(written.to.Sub(start)/time.Hour), total)
		}
		if r.plan != nil && err == nil {
			report(stats)
			progress.Step("rating hours", int64(c.to.Sub(start)/time.Hour), total)
		}
		if err != nil {
			return err
		}
		if a.err != nil {
			return a.err
		}
		if r.plan == nil {
			written = &w
		}
		c, more = a.next, a.more
	}
	if written != nil {
		stats, err := r.j.summarise(ctx, *written)
		if err != nil {
			return err
		}
		report(stats)
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

// readCommitted is the isolation of rating's transactions. Under REPEATABLE READ an
// INSERT (or CREATE) ... SELECT locks every usage row it reads: rating would wait
// for any metering transaction in flight on those hours (and time out after 50 s,
// three times), and hold writers back meanwhile. Reading only what is committed is
// all rating needs: a row committed later is stamped at or after the late scan's
// mark (see scanHorizon) and re-rated by the next run.
func readCommitted() *sql.TxOptions { return &sql.TxOptions{Isolation: sql.LevelReadCommitted} }

// rateChunkRows is about how many usage rows one rating statement reads: a catch-up
// over a long outage rates many hours per statement and transaction (the per-hour
// round trips and commits were a third of its time), while an hour is never split
// and a busy hour is rated alone.
const rateChunkRows = 100_000

// chunkEnd is the end (exclusive) of the hours rated together from first: the hour
// of the usage row that comes chunk-size rows after first's, read from usage_hour
// alone, or before when fewer rows are left; and no later than the next price
// boundary, so that one price list holds for every hour of the chunk.
func (r *rater) chunkEnd(ctx context.Context, first, before time.Time) (time.Time, error) {
	n := r.j.rateChunkRows
	if n <= 0 {
		n = rateChunkRows
	}
	end := before
	var h time.Time
	err := r.j.DB.QueryRowContext(ctx, `SELECT hour FROM usage_records WHERE hour >= ? AND hour < ?
ORDER BY hour LIMIT 1 OFFSET ?`, first, before, n).Scan(&h)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return time.Time{}, fmt.Errorf("size the rating of %s: %w", fmtHour(first), err)
	case floorHour(h).After(first):
		end = floorHour(h)
	default:
		end = first.Add(time.Hour)
	}
	var boundary sql.NullTime
	if err := r.j.DB.QueryRowContext(ctx, nextPriceBoundarySQL, first, first).Scan(&boundary); err != nil {
		return time.Time{}, fmt.Errorf("size the rating of %s: %w", fmtHour(first), err)
	}
	if boundary.Valid {
		// The first hour at or after the boundary is priced by the new list.
		b := floorHour(boundary.Time)
		if b.Before(boundary.Time) {
			b = b.Add(time.Hour)
		}
		end = minTime(end, b)
	}
	return end, nil
}

// chunk is hours [from, to) rated by one statement.
type chunk struct{ from, to time.Time }

// nextChunk is the chunk that starts at the first hour with usage in [after,
// before), if any.
func (r *rater) nextChunk(ctx context.Context, after, before time.Time) (chunk, bool, error) {
	first, ok, err := r.nextUsageHour(ctx, after, before)
	if err != nil || !ok {
		return chunk{}, false, err
	}
	end, err := r.chunkEnd(ctx, first, before)
	if err != nil {
		return chunk{}, false, err
	}
	return chunk{first, end}, true, nil
}

// readAhead is what rateNewHours reads while a chunk is written: the summary of the
// chunk written before it, and the chunk after it.
type readAhead struct {
	stats []hourStats
	next  chunk
	more  bool
	err   error
}

// ratedChunk is a chunk rateHours committed, and the range (lo, hi] of the ids of
// the charges its statement inserted, which summarise reads back by primary key.
type ratedChunk struct {
	chunk
	lo, hi int64
}

// rateHours writes the charges of the hours [from, to) and moves the watermark to
// the last of them, in one transaction: a crash leaves either both or neither.
func (j *Job) rateHours(ctx context.Context, from, to, now time.Time) (ratedChunk, error) {
	w := ratedChunk{chunk: chunk{from, to}}
	err := mysql.InTx(ctx, j.DB, readCommitted(), func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, maxChargeIDSQL).Scan(&w.lo); err != nil {
			return fmt.Errorf("find last charge: %w", err)
		}
		if _, err := tx.ExecContext(ctx, insertHoursSQL(), append([]any{now}, ratingArgs(from, from, to)...)...); err != nil {
			return fmt.Errorf("insert charges: %w", err)
		}
		if err := tx.QueryRowContext(ctx, maxChargeIDSQL).Scan(&w.hi); err != nil {
			return fmt.Errorf("find last charge: %w", err)
		}
		if _, err := tx.ExecContext(ctx, setWatermarkSQL, to.Add(-time.Hour), now); err != nil {
			return fmt.Errorf("move watermark: %w", err)
		}
		return nil
	})
	if err != nil {
		return ratedChunk{}, fmt.Errorf("rate %s: %w", hourSpan(from, to), err)
	}
	return w, nil
}

// summarise reads back what rateHours wrote, per hour, oldest first. It runs after
// the commit, beside the next chunk's statement; nothing else writes charges of
// hours being rated (billing holds its lock).
func (j *Job) summarise(ctx context.Context, w ratedChunk) ([]hourStats, error) {
	stats, err := readHourStats(ctx, j.DB, hourStatsSQL, w.lo, w.hi, w.from, w.to, w.lo, w.from, w.to)
	if err != nil {
		return nil, fmt.Errorf("summarise rated %s: %w", hourSpan(w.from, w.to), err)
	}
	return stats, nil
}

// hourSpan names the hours [from, to) in errors: "hour 2025-03-01T05:00Z", or
// "hours 2025-03-01T05:00Z to 2025-03-02T04:00Z".
func hourSpan(from, to time.Time) string {
	if !to.After(from.Add(time.Hour)) {
		return "hour " + fmtHour(from)
	}
	return "hours " + fmtHour(from) + " to " + fmtHour(to.Add(-time.Hour))
}

// planHours computes what rateHours would write, with SELECTs only.
func (r *rater) planHours(ctx context.Context, from, to time.Time) ([]hourStats, error) {
	stats, err := readHourStats(ctx, r.j.DB, planHourStatsSQL(), ratingArgs(from, from, to)...)
	if err != nil {
		return stats, fmt.Errorf("plan %s: %w", hourSpan(from, to), err)
	}
	rows, err := r.j.DB.QueryContext(ctx, planHourProblemsSQL(), ratingArgs(from, from, to)...)
	if err != nil {
		return stats, fmt.Errorf("plan %s: %w", hourSpan(from, to), err)
	}
	defer rows.Close()
	for rows.Next() {
		var k chargeKey
		var u unratedKey
		if err := rows.Scan(&k.hour, &k.account, &k.product, &u.currency, &u.problem); err != nil {
			return stats, fmt.Errorf("plan %s: %w", hourSpan(from, to), err)
		}
		k.hour = k.hour.UTC()
		r.plan[k] = u
	}
	return stats, rows.Err()
}

// hourStats summarises an hour's charges: rated ones per currency, unrated ones per
// problem.
type hourStats struct {
	hour     time.Time
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

// readHourStats reads rows of (hour, currency, problem, count, amount) into one
// summary per hour, oldest first.
func readHourStats(ctx context.Context, q queryer, query string, args ...any) ([]hourStats, error) {
	byHour := map[time.Time]*hourStats{}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("summarise hours: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h time.Time
		var currency, problem, sum sql.NullString
		var n int64
		if err := rows.Scan(&h, &currency, &problem, &n, &sum); err != nil {
			return nil, fmt.Errorf("summarise hours: %w", err)
		}
		h = h.UTC()
		s := byHour[h]
		if s == nil {
			s = &hourStats{hour: h, amounts: map[string]Micros{}, problems: map[string]int64{}}
			byHour[h] = s
		}
		if problem.Valid {
			s.problems[problem.String] += n
			continue
		}
		amt, err := scanMicros(sum)
		if err != nil {
			return nil, fmt.Errorf("summarise hour %s: %w", fmtHour(h), err)
		}
		s.rated += n
		if s.amounts[currency.String], err = s.amounts[currency.String].Add(amt); err != nil {
			return nil, fmt.Errorf("summarise hour %s: %w", fmtHour(h), err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("summarise hours: %w", err)
	}
	out := make([]hourStats, 0, len(byHour))
	for _, s := range byHour {
		out = append(out, *s)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].hour.Before(out[b].hour) })
	return out, nil
}

// lateScan re-rates the keys of already-rated hours whose usage was recorded (or
// corrected) since the scan's mark. It recomputes each key's total from
// usage_records, so a scan that overlaps the previous one changes nothing; the mark
// only decides how much is read.
func (r *rater) lateScan(ctx context.Context) error {
	var mark time.Time
	if r.plan == nil {
		var err error
		if mark, err = r.scanHorizon(ctx); err != nil {
			return err
		}
	}
	if r.st.watermark.Valid {
		since := farPast()
		if r.st.lateScanFrom.Valid {
			since = r.st.lateScanFrom.Time
		}
		hours, err := queryHours(ctx, r.j.DB, `SELECT DISTINCT hour FROM usage_records
WHERE recorded_at >= ? AND hour <= ? ORDER BY hour`, since, r.st.watermark.Time)
		if err != nil {
			return fmt.Errorf("late usage scan: %w", err)
		}
		// Consecutive hours with late usage are re-rated together, within the
		// size and price bounds of a catch-up's chunk: a bulk load over weeks is a
		// few statements, a stray late row one small one.
		for i := 0; i < len(hours); {
			from := hours[i]
			if ctx.Err() != nil {
				return fmt.Errorf("late usage scan stopped before %s: %w", fmtHour(from), cause(ctx))
			}
			end, err := r.chunkEnd(ctx, from, r.st.watermark.Time.Add(time.Hour))
			if err != nil {
				return fmt.Errorf("late usage scan: %w", err)
			}
			j := i + 1
			for j < len(hours) && hours[j].Equal(hours[j-1].Add(time.Hour)) && hours[j].Before(end) {
				j++
			}
			to := hours[j-1].Add(time.Hour)
			if err := r.recompute(ctx, from, aggLate(), []any{from, to, since}, "late usage"); err != nil {
				return fmt.Errorf("late usage scan of %s: %w", hourSpan(from, to), err)
			}
			i = j
			run.ProgressFrom(ctx).Step("late usage hours", int64(i), int64(len(hours)))
		}
	}
	if r.plan != nil {
		return nil
	}
	if _, err := r.j.DB.ExecContext(ctx, setLateScanSQL, mark, r.now); err != nil {
		return fmt.Errorf("record late usage scan: %w", err)
	}
	return nil
}

// lateMargin is how far before the database's time the next late-usage scan starts
// when the database will not show what is in flight (no PROCESS privilege): the old
// wall-clock guess, safe for any metering transaction shorter than that, and slow
// (each run rereads what was recorded in the ten minutes before the previous one).
const lateMargin = 10 * time.Minute

// horizonSlack is taken off the mark for what the horizon cannot see exactly: a
// transaction shows in INNODB_TRX from the moment InnoDB starts it, a little after
// its first statement took NOW() (and one begun while the horizon is read shows
// only if INNODB_TRX was refreshed after it); PROCESSLIST times a statement on
// another clock than NOW(). With nothing in flight the next run rereads only this
// last second.
const horizonSlack = time.Second

// scanHorizon returns where the next late-usage scan must start: a committed
// high-water mark, below the recorded_at of every usage row this scan cannot see.
//
// Why recorded_at alone is not enough: the server stamps a row with its statement's
// start time (NOW()), but the row becomes visible only when its transaction
// commits, and transactions commit in any order. A scan that read everything
// committed and then remembered "the next scan starts at now" would skip a row
// stamped before now by a transaction that commits after. An AUTO_INCREMENT id or a
// sequence has the same flaw (given out at insert, visible at commit) and misses
// corrections, which update rows in place.
//
// So the mark is taken before this scan reads anything, as horizonSlack before the
// earliest of:
//   - NOW(): statements that start later stamp later;
//   - the start of the oldest transaction in flight that has written anything
//     (INNODB_TRX): whatever it wrote or will write is stamped no earlier than its
//     start, and it may commit after our scan;
//   - the start of the oldest statement still running (PROCESSLIST): one that was
//     stamped but has not reached InnoDB yet (waiting for a metadata lock), or is
//     writing its first rows, is not in INNODB_TRX.
//
// A row this scan does not see belongs to a transaction that had not committed when
// the scan read, so it was in flight when the mark was taken (and is covered by one
// of the last two, the slack covering what they show late) or started after (and is
// stamped after NOW()). Everything stamped before the mark had committed or rolled
// back by then, and this scan sees it. With nothing in flight the mark is a second
// before NOW(): the next run reads only what was recorded since, so a run right
// after a bulk load does not repeat it.
//
// What it relies on: recorded_at is left to the server (the column's default and ON
// UPDATE), writers use UTC sessions, the server's clock does not step backwards,
// and a transaction whose first statement waited longer than horizonSlack for a
// metadata lock (DDL on usage_records) is not still open when a scan runs. Without
// the PROCESS privilege, or when INNODB_TRX stays stale, it falls back to
// lateMargin, reported.
func (r *rater) scanHorizon(ctx context.Context) (time.Time, error) {
	for attempt := 1; ; attempt++ {
		h, err := readHorizon(ctx, r.j.DB)
		if mysql.IsAccessDenied(err) {
			return r.marginMark(ctx, "no PROCESS privilege (GRANT PROCESS for a committed mark)")
		}
		if err != nil {
			return time.Time{}, fmt.Errorf("late usage scan: find work in flight: %w", err)
		}
		if h.fresh {
			mark := h.now
			if h.oldestTrx.Valid {
				mark = minTime(mark, h.oldestTrx.Time)
			}
			if h.longestStmt.Valid {
				mark = minTime(mark, h.now.Add(-time.Duration(h.longestStmt.Int64)*time.Microsecond))
			}
			if mark.Before(h.now) {
				r.log.Info().Time("mark", mark).Dur("behind", h.now.Sub(mark)).Msg("late usage scan: work in flight holds the mark back")
			}
			return mark.Add(-horizonSlack), nil
		}
		if attempt == horizonAttempts {
			return r.marginMark(ctx, "INNODB_TRX was not refreshed (something reads it more often than every 0.1 s)")
		}
		t := time.NewTimer(horizonRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return time.Time{}, fmt.Errorf("late usage scan: %w", cause(ctx))
		}
	}
}

// horizonAttempts and horizonRetry bound the wait for a fresh INNODB_TRX: InnoDB
// refreshes that table only when nobody has read it for 0.1 s.
const (
	horizonAttempts = 5
	horizonRetry    = 150 * time.Millisecond
)

// horizon is what scanHorizonSQL read, and whether INNODB_TRX was fresh: it listed
// our own transaction, begun just before, so it shows every transaction begun
// before that too.
type horizon struct {
	now         time.Time
	oldestTrx   sql.NullTime
	longestStmt sql.NullInt64
	fresh       bool
}

func readHorizon(ctx context.Context, db *sql.DB) (horizon, error) {
	var h horizon
	err := mysql.InTx(ctx, db, nil, func(tx *sql.Tx) error {
		// A locking read registers this transaction with InnoDB at once.
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM billing_state WHERE name = 'rating' LOCK IN SHARE MODE`).Scan(&n); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, scanHorizonSQL).Scan(&h.now, &h.oldestTrx, &h.longestStmt, &h.fresh)
	})
	return h, err
}

// marginMark is the fallback when the database cannot say what is in flight.
func (r *rater) marginMark(ctx context.Context, why string) (time.Time, error) {
	var now time.Time
	if err := r.j.DB.QueryRowContext(ctx, `SELECT NOW(6)`).Scan(&now); err != nil {
		return time.Time{}, fmt.Errorf("late usage scan: %w", err)
	}
	r.log.Warn().Str("why", why).Msg("late usage scan: falling back to a 10-minute margin")
	r.rep.Act("late_scan", "margin", why+": the next scan rereads the last 10 minutes")
	return now.Add(-lateMargin), nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
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
		if err := r.recompute(ctx, h, aggUnrated(), []any{h}, "was unrated"); err != nil {
			return fmt.Errorf("retry unrated charges of %s: %w", fmtHour(h), err)
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
		if err := r.recompute(ctx, h, aggHourAccount(), []any{h, acct}, "recomputed"); err != nil {
			return fmt.Errorf("recompute account %d at %s: %w", acct, fmtHour(h), err)
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

// recompute re-rates the keys that agg selects in hours priced at h (h, or hours
// from h that no price boundary falls between): it lists those whose stored charge
// differs, reports each, and (unless dry run) writes them in the same transaction,
// except into months already invoiced for the account, which it
// reports as late_usage_after_close instead.
//
// A real run computes the differences once, into a temporary table, and reports
// and writes from it: computing them twice (once to report, once to write) made a
// bulk re-rating cost 1.7 times one bare statement. A dry run, read-only, streams
// them instead.
func (r *rater) recompute(ctx context.Context, h time.Time, agg usageAgg, aggArgs []any, reason string) error {
	args := ratingArgs(h, aggArgs...)
	// work reports the differences query returns.
	work := func(q queryer, query string, args ...any) error {
		rows, err := q.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d diffRow
			if err := rows.Scan(&d.hour, &d.account, &d.product, &d.quantity, &d.amount, &d.currency, &d.problem,
				&d.exists, &d.oldQuantity, &d.oldAmount, &d.oldCurrency, &d.oldProblem, &d.closed); err != nil {
				return err
			}
			hour := d.hour.UTC()
			period := monthStart(hour)
			k := chargeKey{account: d.account, product: d.product, hour: hour}
			if r.seen[k] {
				continue
			}
			subject := fmt.Sprintf("account %d %s %s", d.account, d.product, fmtHour(hour))
			if d.closed {
				r.seen[k] = true
				r.rep.Count("late_usage_after_close", 1)
				if r.lateShut.ok() {
					r.rep.Problem("late_usage_after_close", subject,
						fmt.Sprintf("period %s is invoiced; %s not billed", period.Format("2006-01"), d.change()),
						append(d.fields(hour), run.Str("period", period.Format("2006-01")))...)
				}
				continue
			}
			why := reason
			if d.oldProblem.Valid {
				why = "was " + d.oldProblem.String
			} else if !d.exists {
				why = reason + ", new key"
			}
			r.rep.Count("charges_rerated", 1)
			if r.rerated.ok() {
				r.rep.Act("rerate", subject, why+"; "+d.change(), append(d.fields(hour), run.Str("reason", why))...)
				run.Item(ctx).Int64("account_id", d.account).Str("product", d.product).
					Str("hour", fmtHour(hour)).Str("reason", why).Str("change", d.change()).Msg("charge re-rated")
			}
			if r.plan != nil {
				r.seen[k] = true
				if d.problem.Valid {
					r.plan[k] = unratedKey{currency: d.currency, problem: d.problem.String}
				} else {
					delete(r.plan, k)
				}
			}
		}
		return rows.Err()
	}
	if r.plan != nil {
		if err := work(r.j.DB, compareSQL(agg), args...); err != nil {
			return fmt.Errorf("plan re-rating: %w", err)
		}
		return nil
	}
	err := mysql.InTx(ctx, r.j.DB, readCommitted(), func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, createDiffSQL(agg), args...); err != nil {
			return err
		}
		var updates, inserts int64
		if err := tx.QueryRowContext(ctx, diffCountsSQL).Scan(&updates, &inserts); err != nil {
			return err
		}
		// Every key left alone in an invoiced month is reported (and remembered, so
		// the retry of unrated charges does not report it again); of the keys
		// written, only as many as the report still lists are read back: a bulk
		// re-rating streamed and logged every key.
		if err := work(tx, diffClosedSQL); err != nil {
			return err
		}
		listed := int64(max(reportCap-r.rerated.n, 0))
		if err := work(tx, diffListSQL, listed); err != nil {
			return err
		}
		if rest := updates + inserts - min(listed, updates+inserts); rest > 0 {
			r.rep.Count("charges_rerated", rest)
			r.rerated.n += int(rest)
		}
		var err error
		if updates > 0 {
			_, err = tx.ExecContext(ctx, updateDiffSQL, r.now)
		}
		if err == nil && inserts > 0 {
			_, err = tx.ExecContext(ctx, insertDiffSQL, r.now)
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, dropDiffSQL)
		return err
	})
	if err != nil {
		return fmt.Errorf("re-rate: %w", err)
	}
	return nil
}

// diffRow is a recomputed charge and the stored one it differs from.
type diffRow struct {
	hour                      time.Time
	account                   int64
	product                   string
	quantity                  sql.NullString // NULL: quantity_out_of_range
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
	f := []run.Field{run.Int("account_id", d.account), run.Str("product", d.product), run.Time("hour", h)}
	if d.quantity.Valid { // NULL: the quantity is out of range, a problem below
		f = append(f, run.Str("quantity", d.quantity.String))
	}
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
	return fmt.Sprintf("quantity %s -> %s, amount %s -> %s", oldQ, nullStr(d.quantity), oldM, money(d.amount, d.currency, d.problem))
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
			"unknown_account":       "no such account",
			"negative_quantity":     "a usage record is negative",
			"unpriced":              "no " + g.currency.String + " price",
			"quantity_out_of_range": "the usage total is beyond " + maxQuantity,
			"amount_out_of_range":   "the amount is beyond " + g.currency.String + " " + maxAmount,
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
