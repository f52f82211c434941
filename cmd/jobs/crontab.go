package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

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
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			dir := fs.String("dir", "crontab", "directory with *.cron, systemd/ and k8s/")
			file := fs.String("file", "", "check one crontab file instead (cron.d format unless --user-crontab)")
			user := fs.Bool("user-crontab", false, "with --file: a user crontab (no user field)")
			n := fs.Int("next", 3, "how many next runs to print per entry")
			at := fs.String("now", "", "compute next runs from this time (RFC 3339 or a date; any time, past or future)")
			return func(ctx context.Context, _ string, _ []string) error {
				now := e.now()
				if *at != "" {
					// Exempt from the clock group's rule: next run times change nothing.
					t, err := parseNow(*at)
					if err != nil {
						return err
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
				if err != nil && len(entries) == 0 {
					return run.Usagef("%v", err)
				}
				if err != nil {
					fmt.Fprintf(e.stderr, "cronkit crontab: %v\n", err)
				}
				rep, cerr := crontab.Check(entries, validateArgs(e), now, *n)
				if cerr != nil {
					return run.Usagef("%v", cerr)
				}
				if werr := rep.WriteText(e.stdout); werr != nil {
					return werr
				}
				if err != nil || rep.Problems() > 0 {
					return fmt.Errorf("%d problem(s)", rep.Problems())
				}
				return nil
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
