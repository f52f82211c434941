package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			return func(context.Context, string, []string) error {
				_, err := fmt.Fprintf(e.stdout, "jobs %s %s\n", e.version, runtime.Version())
				return err
			}
		},
	}
}
