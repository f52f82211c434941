package main

// The job kit: flag groups that every command shares. A group registers its flags
// (each with its CRONKIT_* variable), validates them, and builds what they describe:
// a database handle, a clock, a report writer, a client or, in a dry run, the client's
// refusing stand-in. A job's command file says which groups it uses and wires its job.

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/run"
)

// dbFlags is the database group: every command that reads MySQL.
type dbFlags struct {
	dsn string
	tls string
	// log, when set (a job run), receives the MySQL driver's own messages.
	log *zerolog.Logger
}

func (g *dbFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.dsn, "db-dsn", "", "MySQL DSN, go-sql-driver format: user:pass@tcp(host:3306)/cronkit")
	fs.StringVar(&g.tls, "db-tls", "", "TLS to MySQL: true, skip-verify or preferred (default off)")
}

// validate checks the DSN without connecting; a missing or malformed one is a usage
// error (exit 2) that never echoes the password.
func (g *dbFlags) validate() error {
	if g.dsn == "" {
		return run.Usagef("no database: set --db-dsn (or CRONKIT_DB_DSN)")
	}
	if _, err := mysql.Config(g.dsn, mysql.Options{TLS: g.tls}); err != nil {
		return run.Usagef("--db-dsn: %v", err)
	}
	return nil
}

// openUnchecked connects without checking the schema: for cronkit migrate and the demo,
// which bring the schema up themselves.
func (g *dbFlags) openUnchecked(ctx context.Context, readOnly bool) (*sql.DB, error) {
	if err := g.validate(); err != nil {
		return nil, err
	}
	opts := mysql.Options{ReadOnly: readOnly, TLS: g.tls}
	if g.log != nil {
		opts.Logger = driverLogger{g.log}
	}
	return mysql.Open(ctx, g.dsn, opts)
}

// driverLogger hands the MySQL driver's messages (a connection dropped mid-query,
// "closing bad idle connection") to the run's logger: every stderr line of a run is
// then its JSON or console log, with the run id, instead of the driver's bare
// "[mysql] packets.go:58 unexpected EOF".
type driverLogger struct{ log *zerolog.Logger }

func (d driverLogger) Print(v ...any) {
	d.log.Warn().Str("dependency", "mysql").Msg("mysql driver: " + strings.TrimSpace(fmt.Sprint(v...)))
}

// open connects (a READ ONLY session when readOnly) and checks that the schema is the
// one this binary was built for: after an upgrade whose migrations have not run, every
// command says so (exit 2) instead of failing on an unknown column every hour.
func (g *dbFlags) open(ctx context.Context, readOnly bool) (*sql.DB, error) {
	db, err := g.openUnchecked(ctx, readOnly)
	if err != nil {
		return nil, err
	}
	if err := mysql.CheckSchema(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// outputFlags is the report format group.
type outputFlags struct {
	format string
}

func (g *outputFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.format, "output", "text", "report format: text or json")
}

func (g *outputFlags) validate() error {
	if g.format != "text" && g.format != "json" {
		return run.Usagef("--output %q: want text or json", g.format)
	}
	return nil
}

// textWriter is a value with a text rendering for people (reports, histories).
type textWriter interface {
	WriteText(io.Writer) error
}

// write prints v as JSON, or as its text rendering when it has one.
func (g *outputFlags) write(w io.Writer, v any) error {
	if tw, ok := v.(textWriter); ok && g.format != "json" {
		return tw.WriteText(w)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// clockFlags is --now: one parser and one rule for every command that changes
// something. A time in the future is a what-if, allowed only in a dry run, so a typo
// never suspends customers a year early.
type clockFlags struct {
	now string
}

func (g *clockFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&g.now, "now", "", "act as of this time, RFC 3339 (2026-11-25T10:00:00Z) or a date (2026-11-25, midnight UTC); "+
		"a future time only with --dry-run")
}

// parseNow reads an RFC 3339 time or a date (midnight UTC).
func parseNow(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, run.Usagef("--now %q: want an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25)", s)
}

// clock returns the command's clock: the process clock, or --now held still. A time
// after the process clock is refused unless dryRun.
func (g *clockFlags) clock(process func() time.Time, dryRun bool) (func() time.Time, error) {
	if g.now == "" {
		return process, nil
	}
	t, err := parseNow(g.now)
	if err != nil {
		return nil, err
	}
	if t.After(process()) && !dryRun {
		return nil, run.Usagef("--now %s is in the future: only a dry run (--dry-run) may look ahead", g.now)
	}
	return func() time.Time { return t }, nil
}

// runFlags are the run contract's own flags.
type runFlags struct {
	dryRun      bool
	account     int64
	timeout     time.Duration
	lockWait    time.Duration
	logFormat   string
	logLevel    string
	pingURL     string
	metricsFile string
	pushgateway string
}

func (g *runFlags) register(fs *flag.FlagSet, defaultTimeout time.Duration) {
	fs.BoolVar(&g.dryRun, "dry-run", false, "show what would be done; change nothing (read-only database session)")
	fs.Int64Var(&g.account, "account", 0, "limit the run to one account id")
	fs.DurationVar(&g.timeout, "timeout", defaultTimeout, "stop the run after this long (0: no limit)")
	fs.DurationVar(&g.lockWait, "lock-wait", 0, "wait this long for another run to finish instead of exiting 75 at once")
	fs.StringVar(&g.logFormat, "log-format", "auto", "log format: json, console, or auto (console on a terminal)")
	fs.StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&g.pingURL, "ping-url", "", "healthchecks.io-style check URL, pinged at start and end")
	fs.StringVar(&g.metricsFile, "metrics-file", "", "write Prometheus metrics to this node_exporter textfile path")
	fs.StringVar(&g.pushgateway, "pushgateway", "", "push Prometheus metrics to this Pushgateway URL (push-add)")
}

func (g *runFlags) validate() error {
	if err := validateLogFormat(g.logFormat); err != nil {
		return err
	}
	if _, err := zerolog.ParseLevel(g.logLevel); err != nil || g.logLevel == "" {
		return run.Usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	if g.timeout < 0 {
		return run.Usagef("--timeout must not be negative")
	}
	if g.lockWait < 0 {
		return run.Usagef("--lock-wait must not be negative")
	}
	if g.account < 0 {
		return run.Usagef("--account must be a positive id")
	}
	return nil
}

func validateLogFormat(f string) error {
	switch f {
	case "auto", "json", "console":
		return nil
	}
	return run.Usagef("--log-format %q: want json, console or auto", f)
}

// logFormat resolves "auto": console on a terminal, JSON lines otherwise.
func (e *env) logFormat(f string) string {
	if f != "auto" {
		return f
	}
	if e.tty {
		return "console"
	}
	return "json"
}

// jobKit is a job command's share of the kit: the run contract, the database, the
// report format. Jobs add the groups they need (clock, Stripe, CloudStack, mail).
type jobKit struct {
	e   *env
	job string
	run runFlags
	db  dbFlags
	out outputFlags
}

// newJobKit registers the run contract's groups on fs for job.
func newJobKit(e *env, fs *flag.FlagSet, job string, defaultTimeout time.Duration) *jobKit {
	k := &jobKit{e: e, job: job}
	k.db.register(fs)
	k.run.register(fs, defaultTimeout)
	k.out.register(fs)
	return k
}

// validate checks every group's flags before anything is opened.
func (k *jobKit) validate() error {
	if err := k.run.validate(); err != nil {
		return err
	}
	if err := k.out.validate(); err != nil {
		return err
	}
	return k.db.validate()
}

// runner builds the run contract from the flags.
func (k *jobKit) runner() *run.Runner {
	e, o := k.e, &k.run
	level, _ := zerolog.ParseLevel(o.logLevel)
	r := &run.Runner{
		Job: k.job, Host: e.host, Version: e.version, DryRun: o.dryRun,
		Args:     redactArgs(e.args),
		LockWait: o.lockWait, Timeout: o.timeout,
		Stdout: e.stdout, Stderr: e.stderr, Output: k.out.format, LogFormat: e.logFormat(o.logFormat), LogColor: e.tty, LogLevel: level,
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

// jobFunc runs a job on an open database and returns its report.
type jobFunc func(ctx context.Context, db *sql.DB) (*run.Report, error)

// run is the life of every job run: validate, open the database (read-only in a dry
// run) and check its schema, then hand over to the run contract.
func (k *jobKit) runJob(ctx context.Context, fn jobFunc) error {
	if err := k.validate(); err != nil {
		return err
	}
	r := k.runner()
	k.db.log = r.Logger()
	db, err := k.db.open(ctx, k.run.dryRun)
	if err != nil {
		return r.Abort(ctx, err)
	}
	defer db.Close()
	return r.Run(ctx, db, func(ctx context.Context) (*run.Report, error) { return fn(ctx, db) })
}

// read opens the database for an operator's look (show, history): read-only, no lock,
// no job_runs row.
func (k *jobKit) read(ctx context.Context) (*sql.DB, error) {
	if err := k.out.validate(); err != nil {
		return nil, err
	}
	return k.db.open(ctx, true)
}
