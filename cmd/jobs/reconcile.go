package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/jobs/reconcile"
	"github.com/cronkit/cronkit/lib/payment"
	"github.com/cronkit/cronkit/lib/run"
)

// reconcileChecks are the checks of cronkit reconcile, in the order a plain
// `cronkit reconcile` runs them; `cronkit reconcile <name>` runs one. A check is added
// here (with the flag groups it needs) and nowhere else.
func reconcileChecks(f *reconcileFlags) []reconcileCheck {
	return []reconcileCheck{
		{name: "usage", build: func(dryRun bool) (reconcile.Check, error) {
			orch, err := f.cs.client(dryRun)
			if err != nil {
				return nil, fmt.Errorf("the usage check reads CloudStack: %w", err)
			}
			recheck := time.Duration(f.recheckDays) * 24 * time.Hour
			if f.recheckDays == 0 {
				recheck = -1 // none
			}
			return (&reconcile.UsageCheck{Orchestrator: orch, Recheck: recheck}).AsCheck(), nil
		}},
		{name: "payments", build: func(dryRun bool) (reconcile.Check, error) {
			s, err := f.stripe.reader(dryRun)
			if err != nil {
				return nil, err
			}
			return &reconcile.Payments{Stripe: s}, nil
		}},
	}
}

// reconcileCheck is a check as the command knows it: its verb, and how to build it
// from the flags.
type reconcileCheck struct {
	name  string
	build func(dryRun bool) (reconcile.Check, error)
}

// reconcileCommand is `cronkit reconcile [CHECK|findings|ack ID --reason]`: the nightly
// comparison of what the orchestrator runs, what billing metered and what Stripe
// took, with findings kept as tickets.
func reconcileCommand() *command {
	f := &reconcileFlags{}
	var verbs []string
	for _, c := range reconcileChecks(f) {
		verbs = append(verbs, c.name)
	}
	names := strings.Join(verbs, "|")
	verbs = append(verbs, "findings", "ack")
	return &command{
		name:    "reconcile",
		summary: "compare Stripe, metering and the orchestrator with our books; findings kept as tickets (" + names + "|findings|ack ID --reason)",
		verbs:   verbs,
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			k := newJobKit(e, fs, "reconcile", 2*time.Hour)
			var clock clockFlags
			clock.register(fs)
			f.stripe.register(fs)
			f.cs.register(fs)
			f.register(fs)
			return func(ctx context.Context, verb string, args []string) error {
				switch verb {
				case "findings":
					return reconcileFindings(ctx, k, f)
				case "ack":
					return reconcileAck(ctx, k, f, args[0])
				}
				if err := f.runOnly(k.run); err != nil {
					return err
				}
				now, err := clock.clock(e.now, k.run.dryRun)
				if err != nil {
					return err
				}
				cfg, err := f.config(now(), k.run)
				if err != nil {
					return err
				}
				var checks []reconcile.Check
				for _, c := range reconcileChecks(f) {
					if verb != "" && verb != c.name {
						continue
					}
					check, err := c.build(k.run.dryRun)
					if err != nil {
						return err
					}
					checks = append(checks, check)
				}
				return k.runJob(ctx, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					return (&reconcile.Job{DB: db, Checks: checks, Config: cfg, Now: now}).Run(ctx)
				})
			}
		},
		checkArgs: func(verb string, args []string) error {
			if verb != "ack" {
				return noArgs(verb, args)
			}
			if len(args) != 1 {
				return errors.New("ack takes one finding id")
			}
			if id, err := strconv.ParseInt(args[0], 10, 64); err != nil || id <= 0 {
				return fmt.Errorf("finding id %q: want a positive integer", args[0])
			}
			return nil
		},
	}
}

// reconcileFlags are reconcile's own flags, as given.
type reconcileFlags struct {
	stripe   stripeFlags
	cs       cloudstackFlags
	from, to string
	grace    time.Duration
	fix      bool
	tempDir  string
	lockWait time.Duration
	// recheckDays: how many days before the window the usage check judges again
	// the windows of its findings still open (0: none).
	recheckDays int
	state       string
	class       string
	reason      string
}

func (f *reconcileFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.from, "from", "", "start of the window judged, RFC 3339 or a date (default: the start of the previous UTC day)")
	fs.StringVar(&f.to, "to", "", "end of the window (exclusive), RFC 3339 or a date (default: the start of today, UTC)")
	fs.DurationVar(&f.grace, "grace", reconcile.DefaultGrace, "objects younger than this are not judged yet")
	fs.BoolVar(&f.fix, "fix", false, "repair what is safe (record what Stripe says; never moves money); with --dry-run, show it")
	fs.StringVar(&f.tempDir, "temp-dir", "", "where a dry run sorts Stripe's objects on disk (default: the system's temporary directory)")
	fs.DurationVar(&f.lockWait, "billing-lock-wait", 2*time.Minute, "--fix waits this long for billing's lock, then leaves the repairs to the next run")
	fs.IntVar(&f.recheckDays, "recheck-days", int(reconcile.DefaultRecheck/(24*time.Hour)),
		"usage: also judge again the windows of open findings that start up to this many days before the window, so cured ones resolve (0: none)")
	fs.StringVar(&f.state, "state", "", "findings: only this state (open, acknowledged, resolved, fixed)")
	fs.StringVar(&f.class, "class", "", "findings: only this class ("+strings.Join(reconcile.Classes(), ", ")+")")
	fs.StringVar(&f.reason, "reason", "", "ack: why, kept in the finding's audit trail")
}

// runOnly refuses the operator commands' flags on a run.
func (f *reconcileFlags) runOnly(o runFlags) error {
	switch {
	case f.state != "" || f.class != "":
		return run.Usagef("--state and --class are for cronkit reconcile findings")
	case f.reason != "":
		return run.Usagef("--reason is for cronkit reconcile ack")
	case o.account != 0:
		return run.Usagef("cronkit reconcile judges whole windows: --account does not apply")
	}
	return nil
}

// config checks the run's flags and builds the job's configuration.
func (f *reconcileFlags) config(now time.Time, o runFlags) (reconcile.Config, error) {
	cfg := reconcile.Config{Window: reconcile.DefaultWindow(now), Grace: f.grace, Fix: f.fix, DryRun: o.dryRun,
		TempDir: f.tempDir, BillingLockWait: f.lockWait}
	if f.from != "" {
		t, err := parseWindowTime("--from", f.from)
		if err != nil {
			return cfg, err
		}
		cfg.Window.From = t
	}
	if f.to != "" {
		t, err := parseWindowTime("--to", f.to)
		if err != nil {
			return cfg, err
		}
		cfg.Window.To = t
	}
	switch {
	case f.grace < 0:
		return cfg, run.Usagef("--grace must not be negative")
	case f.lockWait < 0:
		return cfg, run.Usagef("--billing-lock-wait must not be negative")
	case f.recheckDays < 0 || f.recheckDays > 366:
		return cfg, run.Usagef("--recheck-days %d: want 0 (none) to 366", f.recheckDays)
	case !cfg.Window.From.Before(cfg.Window.To):
		return cfg, run.Usagef("--from %s is not before --to %s", cfg.Window.From.Format(time.RFC3339), cfg.Window.To.Format(time.RFC3339))
	case cfg.Window.From.After(now):
		return cfg, run.Usagef("--from %s is in the future", cfg.Window.From.Format(time.RFC3339))
	}
	return cfg, nil
}

func parseWindowTime(flagName, s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, run.Usagef("%s %q: want an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25)", flagName, s)
}

// reader builds what the payments check reads Stripe with. Unlike charging, a dry
// run needs the key too: the check reads Stripe, and refuses nothing but changes.
func (g *stripeFlags) reader(dryRun bool) (reconcile.Stripe, error) {
	if g.key == "" {
		return nil, run.Usagef("the payments check reads Stripe: set --stripe-key (or CRONKIT_STRIPE_KEY), in a dry run too")
	}
	if g.timeout <= 0 {
		return nil, run.Usagef("--stripe-timeout must be positive")
	}
	c := payment.New(payment.Config{APIKey: g.key, BaseURL: g.url, HTTPClient: &http.Client{Timeout: g.timeout}})
	if dryRun {
		return payment.NewDryRun(c), nil
	}
	return c, nil
}

// reconcileFindings lists findings: a read, with no lock and no job_runs row.
func reconcileFindings(ctx context.Context, k *jobKit, f *reconcileFlags) error {
	states := []string{reconcile.StateOpen, reconcile.StateAcknowledged, reconcile.StateResolved, reconcile.StateFixed}
	if f.state != "" && !slices.Contains(states, f.state) {
		return run.Usagef("--state %q: want one of %s", f.state, strings.Join(states, ", "))
	}
	if f.class != "" && !slices.Contains(reconcile.Classes(), f.class) {
		return run.Usagef("--class %q: want one of %s", f.class, strings.Join(reconcile.Classes(), ", "))
	}
	if f.reason != "" || f.fix {
		return run.Usagef("--reason and --fix are not for cronkit reconcile findings")
	}
	db, err := k.read(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	s := &reconcile.Store{DB: db}
	list := reconcile.Findings{}
	for sf, err := range s.List(ctx, reconcile.Filter{State: f.state, Class: f.class}) {
		if err != nil {
			return err
		}
		list = append(list, sf)
	}
	return k.out.write(k.e.stdout, list)
}

// reconcileAck acknowledges an open finding. It is not a run: the finding's event
// is its record, with the operator as actor.
func reconcileAck(ctx context.Context, k *jobKit, f *reconcileFlags, arg string) error {
	if k.run.dryRun {
		return run.Usagef("ack has no dry run; look first with cronkit reconcile findings")
	}
	if err := k.out.validate(); err != nil {
		return err
	}
	if strings.TrimSpace(f.reason) == "" {
		return run.Usagef("--reason is required: say why, it is kept in the audit trail")
	}
	actor := abuseOperator(k.e)
	if actor == "" {
		return run.Usagef("no operator name: set CRONKIT_OPERATOR")
	}
	db, err := k.db.open(ctx, false)
	if err != nil {
		return err
	}
	defer db.Close()
	id, _ := strconv.ParseInt(arg, 10, 64) // checked by checkArgs
	sf, err := (&reconcile.Store{DB: db, Now: k.e.now}).Acknowledge(ctx, id, "operator:"+actor, f.reason)
	switch {
	case errors.Is(err, reconcile.ErrNotFound), errors.Is(err, reconcile.ErrState):
		return run.Usagef("ack: %v", err)
	case err != nil:
		return fmt.Errorf("ack: %w", err)
	}
	if k.out.format == "json" {
		return k.out.write(k.e.stdout, sf)
	}
	_, err = fmt.Fprintf(k.e.stdout, "finding %d (%s): open -> acknowledged by operator:%s: %s\n", sf.ID, sf.Class, actor, f.reason)
	return err
}
