package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cronkit/cronkit/lib/crontab"
	"github.com/cronkit/cronkit/lib/run"
)

// crontabCommand checks schedules without running them (supercronic's -test): every
// line parsed with robfig/cron, every command line checked against the real flag
// sets, the formats compared, and the next runs printed.
func crontabCommand() *command {
	return &command{
		name:    "crontab",
		summary: "check every schedule in crontab/ (cron.d, systemd, Kubernetes) and print the next runs",
		verbs:   []string{"check"},
		checkArgs: func(verb string, args []string) error {
			if verb != "check" {
				return errors.New(`want "crontab check"`)
			}
			return noArgs(verb, args)
		},
		setup: func(e *env, fs *flag.FlagSet) func(context.Context, string, []string) int {
			dir := fs.String("dir", "crontab", "directory with *.cron, systemd/ and k8s/")
			file := fs.String("file", "", "check one crontab file instead (cron.d format unless --user-crontab)")
			user := fs.Bool("user-crontab", false, "with --file: a user crontab (no user field)")
			n := fs.Int("next", 3, "how many next runs to print per entry")
			at := fs.String("now", "", "compute next runs from this time (RFC 3339; default now)")
			return func(ctx context.Context, _ string, _ []string) int {
				now := e.now()
				if *at != "" {
					t, err := time.Parse(time.RFC3339, *at)
					if err != nil {
						fmt.Fprintf(e.stderr, "jobs crontab: --now: %v\n", err)
						return run.ExitUsage
					}
					now = t
				}
				var entries []crontab.Entry
				var err error
				if *file != "" {
					entries, err = loadCrontabFile(*file, !*user)
				} else {
					entries, err = crontab.LoadDir(*dir)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "jobs crontab: %v\n", err)
					if len(entries) == 0 {
						return run.ExitUsage
					}
				}
				rep, cerr := crontab.Check(entries, validateArgs(e), now, *n)
				if cerr != nil {
					fmt.Fprintf(e.stderr, "jobs crontab: %v\n", cerr)
					return run.ExitUsage
				}
				_ = rep.WriteText(e.stdout)
				if err != nil || rep.Problems() > 0 {
					fmt.Fprintf(e.stderr, "jobs crontab: %d problem(s)\n", rep.Problems())
					return run.ExitFailed
				}
				return run.ExitOK
			}
		},
	}
}

func loadCrontabFile(path string, system bool) ([]crontab.Entry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return crontab.ParseCrontab(f, path, system)
}
