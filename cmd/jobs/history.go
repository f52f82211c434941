package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"

	"github.com/cronkit/cronkit/lib/run"
)

func historyCommand() *command {
	return &command{
		name:    "history",
		summary: "list recent job runs from job_runs, newest first",
		setup: func(e *env, fs *flag.FlagSet) func(context.Context, string, []string) int {
			var db dbOptions
			db.register(fs)
			job := fs.String("job", "", "only this job's runs")
			limit := fs.Int("limit", 20, "how many runs")
			output := fs.String("output", "text", "text or json")
			return func(ctx context.Context, _ string, _ []string) int {
				if *output != "text" && *output != "json" {
					fmt.Fprintf(e.stderr, "jobs history: --output %q: want text or json\n", *output)
					return run.ExitUsage
				}
				conn, err := db.open(ctx, true)
				if errors.Is(err, run.ErrUsage) {
					fmt.Fprintf(e.stderr, "jobs history: %v\n", err)
					return run.ExitUsage
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "jobs history: %v\n", err)
					return run.ExitFailed
				}
				defer conn.Close()
				recs, err := run.History(ctx, conn, *job, *limit)
				if err != nil {
					fmt.Fprintf(e.stderr, "jobs history: %v\n", err)
					return run.ExitFailed
				}
				if *output == "json" {
					enc := json.NewEncoder(e.stdout)
					enc.SetIndent("", "  ")
					if recs == nil {
						recs = []run.Record{}
					}
					_ = enc.Encode(recs)
					return run.ExitOK
				}
				_ = run.WriteHistory(e.stdout, recs)
				return run.ExitOK
			}
		},
	}
}
