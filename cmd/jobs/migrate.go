package main

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

func migrateCommand() *command {
	return &command{
		name:    "migrate",
		summary: "apply (up), revert one (down) or list (status) database migrations",
		verbs:   []string{"up", "down", "status"},
		setup: func(e *env, fs *flag.FlagSet) func(context.Context, string, []string) int {
			var db dbOptions
			db.register(fs)
			return func(ctx context.Context, verb string, _ []string) int {
				if verb == "" {
					verb = "up"
				}
				conn, err := db.open(ctx, false)
				if errors.Is(err, run.ErrUsage) {
					fmt.Fprintf(e.stderr, "jobs migrate: %v\n", err)
					return run.ExitUsage
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "jobs migrate: %v\n", err)
					return run.ExitFailed
				}
				defer conn.Close()
				if err := mysql.Migrate(ctx, conn, verb, e.stdout); err != nil {
					fmt.Fprintf(e.stderr, "jobs migrate: %v\n", err)
					return run.ExitFailed
				}
				return run.ExitOK
			}
		},
	}
}
