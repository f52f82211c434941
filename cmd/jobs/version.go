package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"

	"github.com/cronkit/cronkit/lib/run"
)

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version",
		setup: func(e *env, fs *flag.FlagSet) func(context.Context, string, []string) int {
			return func(context.Context, string, []string) int {
				fmt.Fprintf(e.stdout, "jobs %s %s\n", e.version, runtime.Version())
				return run.ExitOK
			}
		},
	}
}
