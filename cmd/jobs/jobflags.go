package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

// dbOptions are the flags of every command that reads MySQL.
type dbOptions struct {
	dsn string
	tls string
}

func (o *dbOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.dsn, "db-dsn", "", "MySQL DSN, go-sql-driver format: user:pass@tcp(host:3306)/cronkit")
	fs.StringVar(&o.tls, "db-tls", "", "TLS to MySQL: true, skip-verify or preferred (default off)")
}

// open connects; a missing or malformed DSN is a usage error (exit 2).
func (o *dbOptions) open(ctx context.Context, readOnly bool) (*sql.DB, error) {
	if o.dsn == "" {
		return nil, run.Usagef("no database: set --db-dsn or CRONKIT_DB_DSN")
	}
	if _, err := mysql.Config(o.dsn, mysql.Options{TLS: o.tls}); err != nil {
		return nil, run.Usagef("--db-dsn: %v", err)
	}
	return mysql.Open(ctx, o.dsn, mysql.Options{ReadOnly: readOnly, TLS: o.tls})
}

// jobOptions are the flags every job shares (the run contract).
type jobOptions struct {
	db          dbOptions
	dryRun      bool
	account     int64
	output      string
	timeout     time.Duration
	lockWait    time.Duration
	logFormat   string
	logLevel    string
	pingURL     string
	metricsFile string
	pushgateway string
}

func (o *jobOptions) register(fs *flag.FlagSet, defaultTimeout time.Duration) {
	o.db.register(fs)
	fs.BoolVar(&o.dryRun, "dry-run", false, "show what would be done; change nothing (read-only database session)")
	fs.Int64Var(&o.account, "account", 0, "limit the run to one account id")
	fs.StringVar(&o.output, "output", "text", "report format: text or json")
	fs.DurationVar(&o.timeout, "timeout", defaultTimeout, "stop the run after this long (0: no limit)")
	fs.DurationVar(&o.lockWait, "lock-wait", 0, "wait this long for another run to finish instead of exiting 75 at once")
	fs.StringVar(&o.logFormat, "log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.pingURL, "ping-url", "", "healthchecks.io-style check URL, pinged at start and end")
	fs.StringVar(&o.metricsFile, "metrics-file", "", "write Prometheus metrics to this node_exporter textfile path")
	fs.StringVar(&o.pushgateway, "pushgateway", "", "push Prometheus metrics to this Pushgateway URL (push-add)")
}

// validate checks the values flags cannot check themselves.
func (o *jobOptions) validate() error {
	if o.output != "text" && o.output != "json" {
		return run.Usagef("--output %q: want text or json", o.output)
	}
	switch o.logFormat {
	case "auto", "json", "console":
	default:
		return run.Usagef("--log-format %q: want json, console or auto", o.logFormat)
	}
	if _, err := zerolog.ParseLevel(o.logLevel); err != nil || o.logLevel == "" {
		return run.Usagef("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	if o.timeout < 0 || o.lockWait < 0 {
		return run.Usagef("--timeout and --lock-wait must not be negative")
	}
	if o.account < 0 {
		return run.Usagef("--account must be a positive id")
	}
	return nil
}

// runner builds the run contract for job from the options.
func (e *env) runner(job string, o *jobOptions) *run.Runner {
	level, _ := zerolog.ParseLevel(o.logLevel)
	format := o.logFormat
	if format == "auto" {
		format = "json"
		if e.tty {
			format = "console"
		}
	}
	r := &run.Runner{
		Job: job, Host: e.host, Version: e.version, DryRun: o.dryRun,
		Args:     redactArgs(e.args),
		LockWait: o.lockWait, Timeout: o.timeout,
		Stdout: e.stdout, Stderr: e.stderr, Output: o.output, LogFormat: format, LogColor: e.tty, LogLevel: level,
		MetricsFile: o.metricsFile, Pushgateway: o.pushgateway,
		HTTPClient: &http.Client{Timeout: 10 * time.Second},
		Now:        e.now,
	}
	if o.pingURL != "" {
		r.Pinger = &run.Pinger{URL: o.pingURL, Client: &http.Client{Timeout: 5 * time.Second}}
	}
	if e.tty {
		r.Progress = run.NewProgress(e.stderr, e.now)
	}
	return r
}

// jobFunc builds a job from an open database and runs it. Configuration errors it
// finds should be run.Usagef errors (exit 2).
type jobFunc func(ctx context.Context, db *sql.DB) (*run.Report, error)

// runJob is the life of every job command: validate, open the database (read-only in
// a dry run), then hand over to the run contract.
func (e *env) runJob(ctx context.Context, job string, o *jobOptions, fn jobFunc) int {
	if err := o.validate(); err != nil {
		fmt.Fprintf(e.stderr, "jobs %s: %v\n", job, err)
		return run.ExitUsage
	}
	r := e.runner(job, o)
	db, err := o.db.open(ctx, o.dryRun)
	if errors.Is(err, run.ErrUsage) {
		fmt.Fprintf(e.stderr, "jobs %s: %v\n", job, err)
		return run.ExitUsage
	}
	if err != nil {
		return r.Abort(ctx, err, run.ExitFailed)
	}
	defer db.Close()
	return r.Run(ctx, db, func(ctx context.Context) (*run.Report, error) { return fn(ctx, db) })
}
