// Package billing is the job the company's revenue rides on: it rates metered usage
// hour by hour against a dated price list, closes each ended month into one invoice
// per account (free credit first), and charges open invoices through the payment
// provider, retrying declines on a schedule.
//
// Every phase is safe to interrupt at any point and run again:
//   - rating commits each hour's charges together with the watermark, in one
//     transaction, and recomputes (never increments) whatever it re-rates;
//   - closing writes one invoice per account and month in one transaction, and the
//     database refuses a second (UNIQUE account_id, period_start);
//   - charging writes the payment attempt with its idempotency key before calling the
//     provider, so a run that dies between the provider's answer and our commit is
//     replayed with the same key and records the original result.
//
// The aggregation runs in the database (one INSERT ... SELECT ... GROUP BY per hour,
// or per chunk of hours when catching up), so memory does not grow with the number
// of usage rows.
package billing

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// Payments charges an invoice at the payment provider. *payment.Client is the real
// one; a declined card is a result, an error means the outcome is unknown or the
// request was refused (see package payment). GetCustomer finds the card a new
// attempt will use, so that the attempt records it and a replay sends exactly the
// same request even if the customer changes cards in between.
type Payments interface {
	Charge(ctx context.Context, req payment.ChargeRequest) (payment.ChargeResult, error)
	GetCustomer(ctx context.Context, id string) (payment.Customer, error)
}

// Config is what ops tune; the zero value takes the defaults below.
type Config struct {
	// SettleDelay is how long after an hour ends its usage is considered complete
	// enough to rate (metering agents report a little late). Default 15 minutes.
	SettleDelay time.Duration
	// RetrySchedule is when a declined invoice is tried again, counted from the
	// invoice's opening: attempt n+1 is due at opened_at + RetrySchedule[n-1]. After
	// the last one the invoice's collection is exhausted (dunning takes over).
	// Default 1, 3, 5 and 7 days.
	RetrySchedule []time.Duration
	// NetDays is the payment term: due_at = opened_at + NetDays days.
	NetDays int
	// Account, when non-zero, limits every phase to that account: rating recomputes
	// its un-invoiced charges (the watermark does not move), close and charge touch
	// only its invoices.
	Account int64
	// Month, when set (the first instant of a month, UTC), is the only month Close
	// closes; otherwise every ended month with rated, un-invoiced charges.
	Month time.Time
	// DryRun makes every phase plan instead of act: only SELECTs, no provider call.
	DryRun bool
	// Products, when set, turns collect on: the first phase of Run reads CloudStack's
	// usage into usage_records, mapped to products by it (see Collect).
	Products *Products
	// CollectLookback is how far behind its last read collect reads again; default
	// 48 hours. CollectPageSize is listUsageRecords' page size; default the client's
	// (500).
	CollectLookback time.Duration
	CollectPageSize int
}

// DefaultSettleDelay and DefaultRetrySchedule are the defaults of Config.
const DefaultSettleDelay = 15 * time.Minute

// DefaultRetrySchedule returns 1, 3, 5 and 7 days: the schedule.
func DefaultRetrySchedule() []time.Duration {
	const day = 24 * time.Hour
	return []time.Duration{1 * day, 3 * day, 5 * day, 7 * day}
}

// Job is one billing run. DB is a pool on the billing schema (read-only in a dry
// run); Payments is needed by the charge phase only.
type Job struct {
	DB       *sql.DB
	Payments Payments
	// Usage is CloudStack's usage server, needed by collect only.
	Usage  UsageSource
	Config Config
	// Now is the clock; nil means time.Now. Tests and `--now` fix it.
	Now func() time.Time
	// rateChunkRows overrides rateChunkRows (tests rate an hour at a time with 1).
	rateChunkRows int
}

func (j *Job) now() time.Time {
	clock := j.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

func (j *Job) settleDelay() time.Duration {
	if j.Config.SettleDelay > 0 {
		return j.Config.SettleDelay
	}
	return DefaultSettleDelay
}

func (j *Job) retrySchedule() []time.Duration {
	if len(j.Config.RetrySchedule) > 0 {
		return j.Config.RetrySchedule
	}
	return DefaultRetrySchedule()
}

// Run runs the phases in order: collect (when Config.Products is set and the run is
// not limited to one account), rate, close, charge. A phase's item-level problems do
// not stop the next phase; an error (database gone, cancelled) does.
func (j *Job) Run(ctx context.Context) (*run.Report, error) {
	rep := run.NewReport("billing")
	phases := []func(context.Context) (*run.Report, error){j.Rate, j.Close, j.Charge}
	if j.Config.Products != nil && j.Config.Account == 0 {
		phases = append([]func(context.Context) (*run.Report, error){j.collectPhase}, phases...)
	}
	for _, phase := range phases {
		r, err := phase(ctx)
		rep.Merge(r)
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// Hour formatting in reports and logs: RFC 3339 in UTC, e.g. 2025-03-01T10:00Z.
const hourLayout = "2006-01-02T15:04Z"

func fmtHour(t time.Time) string { return t.UTC().Format(hourLayout) }

func floorHour(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

func monthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// cause returns why ctx ended, for "stopped between hours" errors.
func cause(ctx context.Context) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	return ctx.Err()
}

// reportCap bounds the per-key lines a run reports (re-rated keys, problem keys), so
// a pathological night (a price list deleted, a month of late usage) still gives a
// readable report in bounded memory; counts stay exact, and a summary line says how
// many more there were.
const reportCap = 200

// capped counts the lines of one kind and says whether one more may be reported.
type capped struct{ n int }

func (c *capped) ok() bool {
	c.n++
	return c.n <= reportCap
}

func (c *capped) more() int { return max(c.n-reportCap, 0) }

// plural is "1 charge", "3 charges".
func plural(n int64, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func nullStr(s sql.NullString) string {
	if !s.Valid {
		return "NULL"
	}
	return s.String
}

func scanMicros(s sql.NullString) (Micros, error) {
	if !s.Valid {
		return 0, nil
	}
	return ParseMicros(s.String)
}
