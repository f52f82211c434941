package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

// Window is the span of time a run judges, [From, To).
type Window struct {
	From, To time.Time
}

// DefaultWindow is the UTC day before now's: the nightly run judges yesterday.
func DefaultWindow(now time.Time) Window {
	now = now.UTC()
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	return Window{From: today.AddDate(0, 0, -1), To: today}
}

// DefaultGrace is how young an object may be and not be judged yet: a charge being
// recorded, a refund whose local record is on its way.
const DefaultGrace = time.Hour

// CheckEnv is what a check gets from its run.
type CheckEnv struct {
	DB     *sql.DB
	Store  *Store
	Report *run.Report
	// Window is the window asked for; a check judges nothing younger than Now-Grace.
	Window Window
	Now    time.Time
	Grace  time.Duration
	Fix    bool
	DryRun bool
	// TempDir is where a dry run may sort on disk ("" is the system's).
	TempDir string
	// BillingLockWait is how long --fix waits for billing's lock.
	BillingLockWait time.Duration
	// Recheck says Window is not the run's but an older one judged again (see
	// FindingsCheck.Rechecks).
	Recheck bool
}

// Check is one comparison a run makes: usage (the orchestrator against metering) or
// payments (Stripe against payments and invoices). A check records its findings
// through env.Store (Begin/Add/Finish, or Record) and adds its counts to env.Report.
type Check interface {
	Name() string
	Run(ctx context.Context, env *CheckEnv) error
}

// FindingsCheck is a check that emits its findings one at a time (the usage check)
// over the window asked; the run records them in batches as they come, then resolves
// the open findings of Classes in the window that were not emitted again. The usage
// check plugs in here:
//
//	reconcile.FindingsCheck{CheckName: "usage", Classes: usageClasses,
//		Find: func(ctx context.Context, env *reconcile.CheckEnv, emit func(reconcile.Finding) error) error {
//			_, err := usage.Run(ctx, env.Window.From, env.Window.To, emit)
//			return err
//		}}
type FindingsCheck struct {
	CheckName string
	Classes   []string
	Find      func(ctx context.Context, env *CheckEnv, emit func(Finding) error) error
	// Rechecks, when set, names windows besides the run's to judge again after it
	// (the usage check: the windows of older findings still open). Each is its own
	// scope: Find runs over it (env.Window is it, env.Recheck is true), and the open
	// findings inside it that it does not see again resolve, so a problem cured
	// since its night (late usage collected) closes instead of staying open for
	// ever, and one that is still real keeps its last_seen current.
	Rechecks func(ctx context.Context, env *CheckEnv) ([]Window, error)
}

// Name is the check's verb.
func (c FindingsCheck) Name() string { return c.CheckName }

// Run finds and records over the run's window, then over each window Rechecks
// names. A check that fails records what it emitted so far but resolves nothing in
// the window it was judging: it did not judge all of it.
func (c FindingsCheck) Run(ctx context.Context, env *CheckEnv) error {
	if err := c.judge(ctx, env, c.CheckName); err != nil {
		return err
	}
	if c.Rechecks == nil {
		return nil
	}
	windows, err := c.Rechecks(ctx, env)
	if err != nil {
		return err
	}
	// Counted even when none: a report that says 0 says the recheck ran.
	env.Report.Count(c.CheckName+"_windows_rechecked", 0)
	for _, w := range windows {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := *env
		e.Window, e.Recheck = w, true
		if err := c.judge(ctx, &e, c.CheckName+" recheck"); err != nil {
			return fmt.Errorf("recheck %s .. %s: %w", w.From.UTC().Format(time.RFC3339), w.To.UTC().Format(time.RFC3339), err)
		}
		env.Report.Count(c.CheckName+"_windows_rechecked", 1)
	}
	return nil
}

// judge is one scope of Run: env.Window found, recorded and resolved.
func (c FindingsCheck) judge(ctx context.Context, env *CheckEnv, name string) error {
	rec, err := env.Store.Begin(ctx, Scope{Check: name, Classes: c.Classes, From: env.Window.From, To: env.Window.To})
	if err != nil {
		return err
	}
	if err := c.Find(ctx, env, rec.Emit(ctx)); err != nil {
		if ferr := rec.flush(ctx); ferr != nil {
			return errors.Join(err, ferr)
		}
		return err
	}
	sum, err := rec.Finish(ctx)
	if err != nil {
		return err
	}
	reportSummary(env.Report, sum, env.Window.From, env.Window.To)
	return nil
}

// RecheckWindows turns the windows of open findings (oldest first, as
// Store.OpenWindows gives them) into the spans a run judges again: those the run's
// own window covers are left out (it has judged them), overlapping or touching ones
// become one span (the inventory is read once for it, not once a night), and the
// spans come newest first, so that a finding seen in several takes the oldest, where
// it stays judged until that night is cured or leaves the lookback.
func RecheckWindows(open []Window, judged Window) []Window {
	var out []Window
	for _, w := range open {
		if !w.From.Before(w.To) || (!w.From.Before(judged.From) && !w.To.After(judged.To)) {
			continue
		}
		if n := len(out); n > 0 && !w.From.After(out[n-1].To) {
			if w.To.After(out[n-1].To) {
				out[n-1].To = w.To
			}
			continue
		}
		out = append(out, w)
	}
	slices.Reverse(out)
	return out
}

// Config is a run's configuration.
type Config struct {
	Window Window
	Grace  time.Duration
	// Fix repairs what is safe (a dry run shows what it would repair).
	Fix    bool
	DryRun bool
	// TempDir, BillingLockWait: see CheckEnv.
	TempDir         string
	BillingLockWait time.Duration
	// MaxProblems bounds the open findings listed in the report (default 1000); the
	// counts still cover all of them.
	MaxProblems int
}

// Job is cronkit reconcile: it runs its checks over one window, then reports every
// finding still open as a problem, so that the run exits 3 until each is fixed,
// resolved or acknowledged by a person.
type Job struct {
	DB     *sql.DB
	Checks []Check
	Config Config
	Now    func() time.Time
}

func (j *Job) now() time.Time {
	clock := j.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

// Run runs every check, even after one fails (the others' findings are still worth
// recording), then lists the open findings.
func (j *Job) Run(ctx context.Context) (*run.Report, error) {
	rep := run.NewReport("reconcile")
	now := j.now()
	cfg := j.Config
	if cfg.Window.From.IsZero() && cfg.Window.To.IsZero() {
		cfg.Window = DefaultWindow(now)
	}
	if !cfg.Window.From.Before(cfg.Window.To) {
		return rep, run.Usagef("the window %s .. %s is empty", cfg.Window.From.Format(time.RFC3339), cfg.Window.To.Format(time.RFC3339))
	}
	store := &Store{DB: j.DB, Now: j.Now, DryRun: cfg.DryRun}
	env := &CheckEnv{DB: j.DB, Store: store, Report: rep, Window: cfg.Window, Now: now, Grace: cfg.Grace, Fix: cfg.Fix,
		DryRun: cfg.DryRun, TempDir: cfg.TempDir, BillingLockWait: cfg.BillingLockWait}
	var errs []error
	for _, c := range j.Checks {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := c.Run(ctx, env); err != nil {
			if run.ExitCode(err) == run.ExitUsage {
				return rep, err
			}
			errs = append(errs, fmt.Errorf("%s check: %w", c.Name(), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return rep, err
	}
	return rep, reportOpen(ctx, store, rep, cfg.MaxProblems)
}

// reportOpen lists the open findings as the report's problems and counts them by
// class (findings_open_<class>, the metrics per class).
func reportOpen(ctx context.Context, s *Store, rep *run.Report, maxProblems int) error {
	if maxProblems <= 0 {
		maxProblems = 1000
	}
	listed := 0
	var more int64
	for f, err := range s.Open(ctx) {
		if err != nil {
			return err
		}
		rep.Count("findings_open_"+f.Class, 1)
		rep.Count("findings_open", 1)
		if listed == maxProblems {
			more++
			continue
		}
		listed++
		rep.Problem(f.Class, f.Subject(), f.Detail, f.Fields()...)
	}
	if more > 0 {
		rep.Problem("findings_not_listed", "findings", fmt.Sprintf("%d more open findings: cronkit reconcile findings --state open", more),
			run.Int("count", more))
	}
	if n := s.PlannedOpen(); n > int64(maxPlanned) {
		rep.Count("findings_open", n-int64(maxPlanned))
	}
	return nil
}

// reportSummary adds a check's recording to the report.
func reportSummary(rep *run.Report, sum Summary, from, to time.Time) {
	classes := make([]string, 0, len(sum.Seen))
	var seen int64
	for c, n := range sum.Seen {
		classes = append(classes, c)
		rep.Count("findings_seen_"+c, n)
		seen += n
	}
	slices.Sort(classes)
	rep.Count("findings_opened", sum.Opened)
	rep.Count("findings_reopened", sum.Reopened)
	rep.Count("findings_resolved", sum.Resolved)
	rep.Act("check", sum.Check, fmt.Sprintf("%s .. %s: %d finding(s) seen, %d new, %d reopened, %d resolved",
		from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), seen, sum.Opened, sum.Reopened, sum.Resolved),
		run.Time("from", from), run.Time("to", to), run.Int("seen", seen), run.Int("opened", sum.Opened),
		run.Int("reopened", sum.Reopened), run.Int("resolved", sum.Resolved))
}
