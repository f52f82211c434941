package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/cronkit/cronkit/jobs/prune"
	"github.com/cronkit/cronkit/lib/run"
)

// pruneCommand is `cronkit prune`: the daily deletion, in small batches, of what has
// outlived its retention, so the working tables stop growing. The audit tables are
// never pruned.
func pruneCommand() *command {
	return &command{
		name:    "prune",
		summary: "delete, in small batches, raw usage, CPU samples, finished mail and job runs past their retention",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			k := newJobKit(e, fs, "prune", 2*time.Hour)
			var clock clockFlags
			clock.register(fs)
			cfg := prune.DefaultConfig()
			fs.Var((*days)(&cfg.Usage), "usage-retention", "keep raw usage records (billing collect's archive) this long after the end of the month they were invoiced in; 0 keeps them all (e.g. 180d, 4320h)")
			fs.Var((*days)(&cfg.Samples), "sample-retention", "keep abuse's CPU samples this long; 0 keeps them all")
			fs.Var((*days)(&cfg.Outbox), "outbox-retention", "keep sent and cancelled outbox mail this long; 0 keeps it all")
			fs.Var((*days)(&cfg.Runs), "run-retention", "keep job_runs rows this long (at least 24h); 0 keeps them all")
			fs.IntVar(&cfg.Batch, "batch", prune.DefaultBatch, "rows deleted per statement (and per transaction)")
			fs.DurationVar(&cfg.Pause, "batch-pause", prune.DefaultPause, "rest between batches")
			return func(ctx context.Context, _ string, _ []string) error {
				if k.run.account != 0 {
					return run.Usagef("cronkit prune works on whole tables: --account does not apply")
				}
				cfg.DryRun = k.run.dryRun
				if err := cfg.Validate(); err != nil {
					return err
				}
				now, err := clock.clock(e.now, k.run.dryRun)
				if err != nil {
					return err
				}
				return k.runJob(ctx, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					return (&prune.Job{DB: db, Config: cfg, Now: now}).Run(ctx)
				})
			}
		},
	}
}

// days is a retention flag: a Go duration (4320h) or a number of days (180d).
type days time.Duration

func (d *days) String() string {
	if d == nil {
		return "0"
	}
	td := time.Duration(*d)
	if td%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(td/(24*time.Hour)), 10) + "d"
	}
	return td.String()
}

func (d *days) Set(s string) error {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 0 || v > 100*365 {
			return fmt.Errorf("%q: want a number of days (180d) or a duration (4320h)", s)
		}
		*d = days(time.Duration(v) * 24 * time.Hour)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q: want a number of days (180d) or a duration (4320h)", s)
	}
	*d = days(v)
	return nil
}
