package reconcile

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
)

// Orchestrator is what the usage check reads of CloudStack: *orchestrator.Client, or
// its dry-run stand-in (reads only).
type Orchestrator interface {
	ListAccounts(ctx context.Context) ([]orchestrator.Account, error)
	VMs(ctx context.Context, f orchestrator.ListVMs) iter.Seq2[orchestrator.VM, error]
	Volumes(ctx context.Context) iter.Seq2[orchestrator.Volume, error]
	PublicIPs(ctx context.Context) iter.Seq2[orchestrator.PublicIP, error]
	Events(ctx context.Context, f orchestrator.ListEvents) iter.Seq2[orchestrator.Event, error]
}

var (
	_ Orchestrator = (*orchestrator.Client)(nil)
	_ Orchestrator = (*orchestrator.DryRun)(nil)
)

// Defaults for zero UsageCheck fields.
const (
	// DefaultSettle is how long after an hour ends before its missing usage counts as
	// running_not_metered: the usage server and collect write late. Collect's own
	// coverage holds the judgement back further when it is behind.
	DefaultSettle = 2 * time.Hour
	// DefaultTolerance is how far the event log and the usage server may disagree on
	// when something started or stopped (they stamp it separately), and the least
	// running time in an hour that must be metered.
	DefaultTolerance = 5 * time.Minute
	// DefaultEventLookback is how far before the window the event log is read, to
	// know each resource's state when the window opens and to judge the records that
	// began the day before (a daily usage server's). It is never less than a day.
	DefaultEventLookback = 24 * time.Hour
	// DefaultStageBatch is how many rows one staging INSERT carries.
	DefaultStageBatch = 1000
	// DefaultRecheck is how far before the run's window the windows of still-open
	// findings are judged again (cronkit reconcile --recheck-days 7): late usage that
	// collect filled in, a VM someone metered by hand, resolves within a week of
	// nights; an open finding older than that stays open for a person.
	DefaultRecheck = 7 * 24 * time.Hour
	// maxRecheckWindows bounds the distinct windows of open findings read for a
	// recheck (nightly runs make one a night; ad hoc --from/--to runs make more).
	maxRecheckWindows = 1000
)

// ErrStaging wraps a failure to stage the orchestrator's side, in the database's
// TEMPORARY table and, failing that (a READ ONLY session, a SELECT-only user), in
// temporary files.
var ErrStaging = errors.New("usage check: cannot stage the orchestrator's side")

// UsageCheck compares what CloudStack ran with what was metered (issue 10's usage
// check): it streams the inventory (VMs, volumes, public IP addresses) and the event
// log of the window into a staging table, then merge-joins it, in resource order,
// with collect's raw records (cloudstack_usage) and the usage_records rows no raw
// record carries, in bounded memory (one resource's rows at a time, plus one entry
// per account).
//
// The findings (see the Class* constants of the usage check):
//   - running_not_metered: hours of the window in which the orchestrator surely ran
//     a VM (or held a volume or an address) and nothing metered it, judged only up
//     to Now minus Settle and no further than collect has read;
//   - metered_not_found: billable usage of a resource the orchestrator does not know
//     (neither in its inventory nor in its event log);
//   - metered_after_removal: more usage than the resource can have had, where the
//     rest of the record's span is after its destroy, expunge, deletion or release;
//   - hours_exceed_window: records of one resource and usage type carrying more
//     hours than the time they span (a daily record holds up to 24);
//   - account_mismatch: usage metered on a CloudStack account that owned the
//     resource neither now nor in any event of the window;
//   - suspended_but_running: an account cronkit suspended or terminated
//     (accounts.status, which abuse keeps) whose VMs CloudStack still runs, or whose
//     CloudStack account is still enabled, once Settle has passed since its case
//     got there.
//
// Each has a fingerprint of its class and ids only, so the same problem is the same
// finding on every run. Records abuse or billing chose not to bill (collect's
// "ignored") never make a finding; they still count as metering.
type UsageCheck struct {
	DB           *sql.DB
	Orchestrator Orchestrator
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Settle, Tolerance, EventLookback and StageBatch: zero means the default.
	Settle        time.Duration
	Tolerance     time.Duration
	EventLookback time.Duration
	StageBatch    int
	// TempDir is where a session that cannot create the staging table stages in
	// files instead; empty means the system's temporary directory.
	TempDir string
	// Recheck is how far before the run's window AsCheck judges again the windows
	// of open (not acknowledged) usage findings, so that a cured one resolves: zero
	// means DefaultRecheck, negative none. Each window costs one more read of the
	// inventory and of its events; touching windows are read as one.
	Recheck time.Duration

	// runRows overrides stageRunRows (tests: many runs from a small world).
	runRows int
}

// UsageStats is what one run read and found, for the report's counts.
type UsageStats struct {
	From, To time.Time
	// JudgedTo is the end of the hours running_not_metered judged (From when none).
	JudgedTo time.Time
	Accounts int64
	VMs      int64
	Volumes  int64
	IPs      int64
	// Events counts the events staged; EventsSkipped those that did not happen
	// (scheduled, started, failed) or name no resource (a CloudStack before 4.17).
	Events        int64
	EventsSkipped int64
	MeteringRows  int64
	// Resources is how many resource ids the merge compared; Conflicts how many of
	// those had a span their events (or inventory) contradict, which is not judged.
	Resources int64
	Conflicts int64
	Findings  map[string]int64
	// Staging says where the orchestrator's side was staged: StagingDatabase, or
	// StagingFiles for a session that may not create a TEMPORARY table.
	Staging string
}

// PreviousDay is the default window: the UTC day before now's.
func PreviousDay(now time.Time) (from, to time.Time) {
	to = now.UTC().Truncate(24 * time.Hour)
	return to.Add(-24 * time.Hour), to
}

// fingerprint is the stable identity of a finding: its class and ids, hashed.
func fingerprint(class string, ids ...string) string {
	h := sha256.New()
	h.Write([]byte(class))
	for _, id := range ids {
		h.Write([]byte{0})
		h.Write([]byte(id))
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (u *UsageCheck) now() time.Time {
	clock := u.Now
	if clock == nil {
		clock = time.Now
	}
	return clock()
}

func orDefault[T int | time.Duration](v, d T) T {
	if v > 0 {
		return v
	}
	return d
}

// Run checks the window [from, to) (whole hours; a zero from and to mean the
// previous UTC day) and passes each finding to emit as it is found; an error from
// emit stops the run and is returned.
func (u *UsageCheck) Run(ctx context.Context, from, to time.Time, emit func(Finding) error) (UsageStats, error) {
	r, err := u.newRun(from, to, emit)
	if err != nil {
		return UsageStats{}, err
	}
	err = r.run(ctx)
	return r.stats, err
}

func (u *UsageCheck) newRun(from, to time.Time, emit func(Finding) error) (*usageRun, error) {
	if u.DB == nil || u.Orchestrator == nil {
		return nil, errors.New("usage check: needs a database and the orchestrator")
	}
	now := u.now().UTC().Truncate(time.Second)
	if from.IsZero() && to.IsZero() {
		from, to = PreviousDay(now)
	}
	from = from.UTC().Truncate(time.Hour)
	if t := to.UTC().Truncate(time.Hour); t.Before(to.UTC()) {
		to = t.Add(time.Hour)
	} else {
		to = t
	}
	if !from.Before(to) {
		return nil, fmt.Errorf("usage check: empty window %s .. %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	return &usageRun{
		u: u, emit: emit, now: now, from: from, to: to,
		settle:    orDefault(u.Settle, DefaultSettle),
		tolerance: orDefault(u.Tolerance, DefaultTolerance),
		lookback:  max(orDefault(u.EventLookback, DefaultEventLookback), 24*time.Hour),
		batch:     orDefault(u.StageBatch, DefaultStageBatch),
		stats:     UsageStats{From: from, To: to, Findings: map[string]int64{}},
		owners:    map[string]int64{},
	}, nil
}

// UsageClasses are the classes the usage check judges: a run resolves the open ones of
// its window that it did not find again.
func UsageClasses() []string {
	return []string{ClassRunningNotMetered, ClassMeteredNotFound, ClassMeteredAfterRemoval,
		ClassHoursExceedWindow, ClassAccountMismatch, ClassSuspendedButRunning}
}

// AsCheck plugs the usage check into a reconcile run: it judges the run's window on
// the run's database and clock, and counts what it read in the report; then it
// judges again the windows of open findings from the Recheck before (see
// FindingsCheck.Rechecks), counting them as usage_windows_rechecked.
func (u *UsageCheck) AsCheck() Check {
	return FindingsCheck{CheckName: "usage", Classes: UsageClasses(),
		Find: func(ctx context.Context, env *CheckEnv, emit func(Finding) error) error {
			c := *u
			c.DB = env.DB
			if c.Now == nil {
				now := env.Now
				c.Now = func() time.Time { return now }
			}
			if c.TempDir == "" {
				c.TempDir = env.TempDir
			}
			st, err := c.Run(ctx, env.Window.From, env.Window.To, emit)
			if env.Recheck {
				// The inventory counts are the run's window's; a recheck says only
				// how much more it compared.
				env.Report.Count("usage_recheck_resources", st.Resources)
				return err
			}
			for name, n := range map[string]int64{
				"usage_accounts": st.Accounts, "usage_vms": st.VMs, "usage_volumes": st.Volumes, "usage_ips": st.IPs,
				"usage_events": st.Events, "usage_metering_rows": st.MeteringRows, "usage_resources": st.Resources,
			} {
				env.Report.Count(name, n)
			}
			return err
		},
		Rechecks: func(ctx context.Context, env *CheckEnv) ([]Window, error) {
			back := orDefault(u.Recheck, DefaultRecheck)
			if u.Recheck < 0 {
				return nil, nil
			}
			open, err := env.Store.OpenWindows(ctx, UsageClasses(), env.Window.From.Add(-back), maxRecheckWindows)
			if err != nil {
				return nil, fmt.Errorf("usage check: %w", err)
			}
			return RecheckWindows(open, env.Window), nil
		}}
}
