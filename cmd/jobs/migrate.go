package main

import (
	"context"
	"flag"

	"github.com/cronkit/cronkit/lib/mysql"
)

func migrateCommand() *command {
	return &command{
		name:    "migrate",
		summary: "apply (up), revert one (down) or list (status) database migrations",
		verbs:   []string{"up", "down", "status"},
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			var db dbFlags
			db.register(fs)
			return func(ctx context.Context, verb string, _ []string) error {
				if verb == "" {
					verb = "up"
				}
				conn, err := db.openUnchecked(ctx, verb == "status")
				if err != nil {
					return err
				}
				defer conn.Close()
				return mysql.Migrate(ctx, conn, verb, e.stdout)
			}
		},
	}
}
