package main

import (
	"context"
	"flag"

	"github.com/cronkit/cronkit/lib/run"
)

func historyCommand() *command {
	return &command{
		name:    "history",
		summary: "list recent job runs from job_runs, newest first",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			var db dbFlags
			var out outputFlags
			db.register(fs)
			out.register(fs)
			job := fs.String("job", "", "only this job's runs")
			limit := fs.Int("limit", 20, "how many runs")
			return func(ctx context.Context, _ string, _ []string) error {
				if err := out.validate(); err != nil {
					return err
				}
				if *limit < 1 {
					return run.Usagef("--limit must be at least 1")
				}
				conn, err := db.open(ctx, true)
				if err != nil {
					return err
				}
				defer conn.Close()
				recs, err := run.History(ctx, conn, *job, *limit)
				if err != nil {
					return err
				}
				if recs == nil {
					recs = []run.Record{}
				}
				return out.write(e.stdout, run.Runs(recs))
			}
		},
	}
}
