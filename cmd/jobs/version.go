package main

import (
	"context"
	"flag"
	"fmt"
	"runtime"
)

// buildInfo is what `version` reports: the Makefile sets it at link time from git
// (-ldflags -X), so a binary found on a host or in an image names the commit it was
// built from, and two builds of one commit print the same thing.
type buildInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit"`
	CommitTime string `json:"commit_time"` // RFC 3339, UTC; the build's SOURCE_DATE_EPOCH
	Go         string `json:"go"`
}

func versionCommand() *command {
	return &command{
		name:    "version",
		summary: "print the version, the commit it was built from and the Go release",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			var out outputFlags
			out.register(fs)
			return func(context.Context, string, []string) error {
				if err := out.validate(); err != nil {
					return err
				}
				b := buildInfo{Version: e.version, Commit: e.commit, CommitTime: e.commitTime, Go: runtime.Version()}
				if out.format == "json" {
					return out.write(e.stdout, b)
				}
				_, err := fmt.Fprintf(e.stdout, "cronkit %s (commit %s, %s) %s\n", b.Version, b.Commit, b.CommitTime, b.Go)
				return err
			}
		},
	}
}
