// Package prune is cronkit prune: the daily job that keeps cronkit's working tables from
// growing forever. It deletes, in small batches of short transactions, the rows that
// have outlived their retention: raw usage records of months rated and invoiced long
// ago, abuse's CPU samples, finished outbox mail and old job_runs rows. The audit
// tables (case transitions, payments, invoices and their lines, cases, findings) are
// never touched: the job has no statement that names them.
package prune

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/run"
)

// Default retentions, documented in the README and as the flags' defaults.
const (
	// DefaultUsageRetention is how long raw usage records are kept after the end of
	// the month they were invoiced in: past a card's dispute window (120 days), so
	// the records behind a contested invoice are still there to show.
	DefaultUsageRetention = 180 * 24 * time.Hour
	// DefaultSampleRetention keeps abuse's CPU samples a month, far longer than any
	// streak a policy asks for (abuse prunes its own after streak + 7 days; this is
	// the backstop when abuse stops running).
	DefaultSampleRetention = 30 * 24 * time.Hour
	// DefaultOutboxRetention keeps sent and cancelled mail three months: the
	// answer to "did we mail account 42?" for a quarter. The campaigns' own state
	// (cases, drip state) remembers what was sent after the row is gone.
	DefaultOutboxRetention = 90 * 24 * time.Hour
	// DefaultRunRetention keeps job_runs half a year: `cronkit history` over two
	// quarters; the logs hold the detail.
	DefaultRunRetention = 180 * 24 * time.Hour
	// DefaultBatch is the rows one statement deletes: small enough that a batch's
	// transaction lasts milliseconds and never holds what billing needs for long.
	DefaultBatch = 1000
	// DefaultPause is the rest between batches, so replication and other jobs keep
	// up while a large backlog is pruned.
	DefaultPause = 50 * time.Millisecond
)

// The shortest retentions accepted: below them a prune would delete rows a job
// still reads. Drip reads a signup's messages back (step spacing, the frequency
// cap) for as long as its funnel runs, two weeks as shipped; collect re-reads the
// last days (--collect-lookback, 48h) and compares them with what it kept; abuse
// keeps at least a week of samples itself.
const (
	MinOutboxRetention = 30 * 24 * time.Hour
	MinUsageRetention  = 30 * 24 * time.Hour
	MinSampleRetention = 7 * 24 * time.Hour
)

// Config is a run's retentions and pacing. A retention of zero leaves its table
// alone.
type Config struct {
	Usage, Samples, Outbox, Runs time.Duration
	Batch                        int
	Pause                        time.Duration
	DryRun                       bool
}

// DefaultConfig is the configuration of a plain `cronkit prune`.
func DefaultConfig() Config {
	return Config{Usage: DefaultUsageRetention, Samples: DefaultSampleRetention, Outbox: DefaultOutboxRetention,
		Runs: DefaultRunRetention, Batch: DefaultBatch, Pause: DefaultPause}
}

// Validate says what is wrong with a configuration, naming the flag.
func (c Config) Validate() error {
	for _, r := range []struct {
		flag string
		d    time.Duration
	}{{"--usage-retention", c.Usage}, {"--sample-retention", c.Samples}, {"--outbox-retention", c.Outbox}, {"--run-retention", c.Runs}} {
		if r.d < 0 {
			return run.Usagef("%s must not be negative (0 keeps the table whole)", r.flag)
		}
	}
	day := 24 * time.Hour
	switch {
	case c.Runs > 0 && c.Runs < day:
		// A shorter one would delete the rows of runs that may still be going.
		return run.Usagef("--run-retention %s: want at least 24h (or 0)", c.Runs)
	case c.Outbox > 0 && c.Outbox < MinOutboxRetention:
		return run.Usagef("--outbox-retention %s: want at least %s (or 0): drip reads its messages back while a funnel runs", c.Outbox, MinOutboxRetention)
	case c.Usage > 0 && c.Usage < MinUsageRetention:
		return run.Usagef("--usage-retention %s: want at least %s (or 0): collect re-reads recent days and compares them with what it kept", c.Usage, MinUsageRetention)
	case c.Samples > 0 && c.Samples < MinSampleRetention:
		return run.Usagef("--sample-retention %s: want at least %s (or 0): abuse judges CPU over days of samples", c.Samples, MinSampleRetention)
	case c.Batch < 1 || c.Batch > 100000:
		return run.Usagef("--batch %d: want 1 to 100000 rows", c.Batch)
	case c.Pause < 0:
		return run.Usagef("--batch-pause must not be negative")
	}
	return nil
}

// Job is one prune run.
type Job struct {
	DB     *sql.DB
	Config Config
	Now    func() time.Time
}

// table is one pruned table: its statements (prune_sql.go) and its cut-off.
type table struct {
	name   string
	count  string
	keys   string // "" when the delete walks an index by itself (deleteSQL takes (cutoff, limit))
	delete string
	before time.Time
	detail string // why the cut-off is where it is, when not plainly now - retention
}

// Run prunes every table whose retention is set and reports the rows deleted (in a
// dry run, the rows it would delete).
func (j *Job) Run(ctx context.Context) (*run.Report, error) {
	rep := run.NewReport("prune")
	if err := j.Config.Validate(); err != nil {
		return rep, err
	}
	now := j.Now().UTC()
	tables, err := j.tables(ctx, now)
	if err != nil {
		return rep, err
	}
	for _, t := range tables {
		var n int64
		if j.Config.DryRun {
			n, err = j.count(ctx, t)
		} else {
			n, err = j.prune(ctx, t)
		}
		if n > 0 || err == nil {
			detail := fmt.Sprintf("%d rows before %s", n, t.before.Format(time.RFC3339))
			if t.detail != "" {
				detail += " (" + t.detail + ")"
			}
			rep.Act("prune", t.name, detail, run.Str("table", t.name), run.Tally("rows", n), run.Time("before", t.before))
			rep.Count(t.name+"_pruned", n)
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// tables lists the tables this run prunes, with their cut-offs.
func (j *Job) tables(ctx context.Context, now time.Time) ([]table, error) {
	c := j.Config
	var ts []table
	if c.Usage > 0 {
		before, why, err := usageCutoff(ctx, j.DB, now, c.Usage)
		if err != nil {
			return nil, err
		}
		ts = append(ts, table{name: "cloudstack_usage", count: countUsageSQL, keys: keysUsageSQL, delete: deleteUsageSQL,
			before: before, detail: why})
	}
	if c.Samples > 0 {
		ts = append(ts, table{name: "abuse_cpu_samples", count: countSamplesSQL, delete: deleteSamplesSQL, before: now.Add(-c.Samples)})
	}
	if c.Outbox > 0 {
		ts = append(ts, table{name: "mail_outbox", count: countOutboxSQL, keys: keysOutboxSQL, delete: deleteOutboxSQL, before: now.Add(-c.Outbox)})
	}
	if c.Runs > 0 {
		ts = append(ts, table{name: "job_runs", count: countRunsSQL, keys: keysRunsSQL, delete: deleteRunsSQL, before: now.Add(-c.Runs)})
	}
	return ts, nil
}

// monthStart is the first instant of t's month, UTC.
func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// usageCutoff is where raw usage may be pruned up to: the start of a month that
// ended at least retention ago, and never past the first month not completely rated
// (rating's watermark) or not completely invoiced (the oldest charge with no
// invoice). With nothing rated yet, nothing is pruned.
func usageCutoff(ctx context.Context, db *sql.DB, now time.Time, retention time.Duration) (time.Time, string, error) {
	before := monthStart(now.Add(-retention))
	var wm sql.NullTime
	err := db.QueryRowContext(ctx, ratingWatermarkSQL).Scan(&wm)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, "", fmt.Errorf("read rating's watermark: %w", err)
	}
	if !wm.Valid {
		return time.Time{}, "nothing rated yet", nil
	}
	why := ""
	if m := monthStart(wm.Time); m.Before(before) {
		before, why = m, "rating has reached "+wm.Time.UTC().Format(time.RFC3339)
	}
	var open sql.NullTime
	if err := db.QueryRowContext(ctx, oldestUninvoicedSQL).Scan(&open); err != nil {
		return time.Time{}, "", fmt.Errorf("find the oldest uninvoiced charge: %w", err)
	}
	if open.Valid {
		if m := monthStart(open.Time); m.Before(before) {
			before, why = m, m.Format("2006-01")+" has charges not invoiced yet"
		}
	}
	return before, why, nil
}

// count is the dry run's answer: how many rows a prune would delete now.
func (j *Job) count(ctx context.Context, t table) (int64, error) {
	var n int64
	if err := j.DB.QueryRowContext(ctx, t.count, t.before).Scan(&n); err != nil {
		return 0, fmt.Errorf("count %s before %s: %w", t.name, t.before.Format(time.RFC3339), err)
	}
	return n, nil
}

// prune deletes t's expired rows batch by batch, each batch its own short
// transaction, resting Pause between batches, and stops between batches when ctx
// ends. It returns the rows deleted so far, also on error.
func (j *Job) prune(ctx context.Context, t table) (int64, error) {
	log := zerolog.Ctx(ctx).With().Str("table", t.name).Logger()
	var total int64
	var after any = int64(0)
	if t.name == "job_runs" {
		after = ""
	}
	for batch := 1; ; batch++ {
		if err := ctx.Err(); err != nil {
			return total, context.Cause(ctx)
		}
		var n int64
		var more bool
		var err error
		if t.keys == "" {
			n, err = j.deleteOldest(ctx, t)
			more = n >= int64(j.Config.Batch)
		} else {
			var lo, hi any
			lo, hi, more, err = j.nextKeys(ctx, t, after)
			if err == nil && lo != nil {
				n, err = j.deleteRange(ctx, t, lo, hi)
				after = hi
			}
		}
		if err != nil {
			return total, fmt.Errorf("prune %s, batch %d: %w", t.name, batch, err)
		}
		total += n
		log.Debug().Int("batch", batch).Int64("rows", n).Msg("pruned a batch")
		if !more {
			break
		}
		if err := rest(ctx, j.Config.Pause); err != nil {
			return total, err
		}
	}
	log.Info().Int64("rows", total).Time("before", t.before).Msg("pruned")
	return total, nil
}

// nextKeys reads the keys of the next batch after the last one: the first and the
// last, and whether a full batch came back (there may be more).
func (j *Job) nextKeys(ctx context.Context, t table, after any) (lo, hi any, more bool, err error) {
	rows, err := j.DB.QueryContext(ctx, t.keys, after, t.before, j.Config.Batch)
	if err != nil {
		return nil, nil, false, fmt.Errorf("read keys: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, nil, false, fmt.Errorf("read keys: %w", err)
		}
		key := any(k)
		if _, isInt := after.(int64); isInt {
			id, err := strconv.ParseInt(k, 10, 64)
			if err != nil {
				return nil, nil, false, fmt.Errorf("read keys: id %q: %w", k, err)
			}
			key = id
		}
		if n == 0 {
			lo = key
		}
		hi = key
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, nil, false, fmt.Errorf("read keys: %w", err)
	}
	return lo, hi, n >= j.Config.Batch, nil
}

// deleteRange deletes the expired rows of one batch's key range in a short READ
// COMMITTED transaction: it locks the rows it deletes and no gaps, so billing's
// inserts beside them never wait.
func (j *Job) deleteRange(ctx context.Context, t table, lo, hi any) (int64, error) {
	return j.inTx(ctx, func(tx *sql.Tx) (sql.Result, error) {
		return tx.ExecContext(ctx, t.delete, lo, hi, t.before)
	})
}

// deleteOldest deletes the oldest batch of a table pruned along its time index.
func (j *Job) deleteOldest(ctx context.Context, t table) (int64, error) {
	return j.inTx(ctx, func(tx *sql.Tx) (sql.Result, error) {
		return tx.ExecContext(ctx, t.delete, t.before, j.Config.Batch)
	})
}

func (j *Job) inTx(ctx context.Context, del func(*sql.Tx) (sql.Result, error)) (int64, error) {
	tx, err := j.DB.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback() //nolint:errcheck // after Commit it is a no-op
	res, err := del(tx)
	if err != nil {
		return 0, fmt.Errorf("delete: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	return n, nil
}

// rest waits d, or until ctx ends.
func rest(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
