package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/crontab"
	"github.com/cronkit/cronkit/lib/run"
)

// scheduleCommand is cron for containers that have none: it runs a crontab's lines as
// child processes of this binary, never two of one line at once, and on SIGTERM
// passes the signal to running children and waits for them (each records itself as
// cancelled), up to --stop-timeout.
func scheduleCommand() *command {
	return &command{
		name:    "schedule",
		summary: "run a crontab in-process (containers without cron): each run a child process, no overlap",
		setup: func(e *env, fs *flag.FlagSet) commandFunc {
			file := fs.String("crontab", "", "crontab file to run (user format: no user field)")
			system := fs.Bool("system-format", false, "the file is in cron.d format (with a user field, ignored)")
			stop := fs.Duration("stop-timeout", 10*time.Minute, "on SIGTERM, wait this long for running jobs before killing them")
			logFormat := fs.String("log-format", "auto", "json, console or auto")
			return func(ctx context.Context, _ string, _ []string) error {
				if *file == "" {
					return run.Usagef("--crontab FILE (or CRONKIT_CRONTAB) is required")
				}
				if err := validateLogFormat(*logFormat); err != nil {
					return err
				}
				entries, err := loadCrontabFile(*file, *system)
				if err != nil {
					return run.Usagef("%v", err)
				}
				// A line that is not a valid command is fatal; advice (a missing
				// --timeout, a timeout longer than the interval) is logged below.
				validate := validateArgs(e)
				for _, en := range entries {
					if err := validate(en.Args); err != nil {
						return run.Usagef("%s:%d: %v", en.Source, en.Line, err)
					}
				}
				rep, _ := crontab.Check(entries, validate, e.now(), 1)
				log := run.NewLogger(e.stderr, e.logFormat(*logFormat), e.tty, zerolog.InfoLevel, map[string]any{
					"job": "schedule", "host": e.host, "version": e.version,
				})
				ctx = log.WithContext(ctx)
				s := &crontab.Scheduler{
					Entries:     entries,
					StopTimeout: *stop,
					Start:       e.startChild(ctx),
				}
				for _, r := range rep.Results {
					for _, p := range r.Problems {
						log.Warn().Str("entry", fmt.Sprintf("%s:%d", r.Entry.Source, r.Entry.Line)).Msg(p)
					}
				}
				log.Info().Str("crontab", *file).Int("entries", len(entries)).Msg("scheduler started")
				if err := s.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
					log.Error().Err(err).Msg("scheduler stopped")
					return run.Logged(err)
				}
				log.Info().Msg("scheduler stopped")
				return run.Logged(context.Cause(ctx))
			}
		},
	}
}

// startChild runs one crontab entry as `cronkit <args>`, with this process's environment
// and output. When the scheduler is told to stop (outer is cancelled), running
// children get SIGTERM so they finish their work in flight and record themselves.
func (e *env) startChild(outer context.Context) func(ctx context.Context, en crontab.Entry) (func() error, error) {
	return func(ctx context.Context, en crontab.Entry) (func() error, error) {
		cmd := exec.CommandContext(ctx, e.self, en.Args...)
		cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
		cmd.Env = os.Environ()
		// Children do not get the terminal's Ctrl-C directly: we pass signals on.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("start %v: %w", en.Args, err)
		}
		exited := make(chan struct{})
		go func() {
			select {
			case <-outer.Done():
				_ = cmd.Process.Signal(syscall.SIGTERM)
			case <-exited:
			}
		}()
		return func() error {
			err := cmd.Wait()
			close(exited)
			return err
		}, nil
	}
}
