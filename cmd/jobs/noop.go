package main

import (
	"context"
	"database/sql"
	"flag"
	"time"

	"github.com/cronkit/cronkit/lib/run"
)

// noopCommand runs the run contract with no work: a new host's set-up (DSN, lock,
// job_runs, ping URL, metrics path) is checked end to end before a real job runs
// there, and --hold keeps the lock to rehearse overlap and SIGTERM handling.
func noopCommand() *command {
	return &command{
		name:    "noop",
		summary: "run the run contract with nothing to do (set-up check; --hold D to keep the lock)",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			k := newJobKit(e, fs, "noop", 0)
			hold := fs.Duration("hold", 0, "hold the lock this long, or until cancelled")
			return func(ctx context.Context, _ string, _ []string) error {
				return k.runJob(ctx, func(ctx context.Context, db *sql.DB) (*run.Report, error) {
					rep := run.NewReport("noop")
					if *hold > 0 {
						t := time.NewTimer(*hold)
						defer t.Stop()
						select {
						case <-t.C:
						case <-ctx.Done():
							return rep, context.Cause(ctx)
						}
					}
					var one int
					if err := db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
						return rep, err
					}
					rep.Count("checks", 1)
					return rep, nil
				})
			}
		},
	}
}
