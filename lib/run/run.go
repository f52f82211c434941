// Package run is the contract every cronkit job run shares: a run id, a logger
// carrying the run's context on every line, a named lock so two runs never overlap, a
// job_runs row, timeout and signal handling, a rendered report, healthcheck pings and
// Prometheus metrics, and one exit code table.
package run

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/mysql"
)

// Runner runs one job once under the run contract. The binary fills it from flags and
// environment; a job never sees it, only the context and the report.
type Runner struct {
	Job     string
	Host    string
	Version string
	Args    []string // the command line, recorded in job_runs (secrets are never flags' values in logs: see cmd/jobs)
	DryRun  bool

	// LockWait is how long to wait for the job's lock; 0 exits 75 at once when held.
	LockWait time.Duration
	// Timeout bounds the run; 0 means none.
	Timeout time.Duration
	// LockCheck is how often the lock's session is checked (default 30s).
	LockCheck time.Duration

	Stdout    io.Writer // the report
	Stderr    io.Writer // the log
	Output    string    // "text" or "json"
	LogFormat string    // "json" or "console"
	LogColor  bool      // colour console logs (a terminal)
	LogLevel  zerolog.Level

	// Progress, when set (a terminal), shows long runs' advance; see ProgressFrom.
	// The run's log lines are then written through it, to its terminal, so that they
	// print above the bar instead of onto it.
	Progress *Progress

	Pinger      *Pinger
	MetricsFile string
	Pushgateway string
	HTTPClient  *http.Client

	// Now and NewID default to the wall clock and a ULID; tests fix them.
	Now   func() time.Time
	NewID func(time.Time) string

	id     string
	logger zerolog.Logger
	start  time.Time
}

// Info is the run as a job sees it, through the context.
type Info struct {
	ID     string
	Job    string
	DryRun bool
	Start  time.Time
}

type infoKey struct{}

// FromContext returns the run's Info (zero outside a run). Jobs use the ID for audit
// rows; never as an idempotency key (those come from business entities).
func FromContext(ctx context.Context) Info {
	i, _ := ctx.Value(infoKey{}).(Info)
	return i
}

// WithInfo attaches i to ctx; tests of jobs use it to run without a Runner.
func WithInfo(ctx context.Context, i Info) context.Context {
	return context.WithValue(ctx, infoKey{}, i)
}

func (r *Runner) now() time.Time {
	clock := r.Now
	if clock == nil {
		clock = time.Now
	}
	return clock().UTC()
}

// ID returns the run id, creating it (and the logger) on first use.
func (r *Runner) ID() string {
	r.init()
	return r.id
}

// Logger returns the run's logger, so the binary can log failures that happen
// before the job starts (a database that does not answer) with the run's context.
func (r *Runner) Logger() *zerolog.Logger {
	r.init()
	return &r.logger
}

func (r *Runner) init() {
	if r.id != "" {
		return
	}
	r.start = r.now()
	if r.NewID != nil {
		r.id = r.NewID(r.start)
	} else {
		r.id = ulid.MustNew(ulid.Timestamp(r.start), rand.Reader).String()
	}
	stderr := r.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	if r.Progress != nil && r.Progress.w != nil {
		stderr = r.Progress
	}
	r.logger = NewLogger(stderr, r.LogFormat, r.LogColor, r.LogLevel, map[string]any{
		"run_id": r.id, "job": r.Job, "host": r.Host, "version": r.Version, "dry_run": r.DryRun,
	})
}

// Abort ends a run that could not start (configuration, connection, schema): it logs
// err, pings failure with err's exit code, and returns err marked as logged. No
// job_runs row is written.
func (r *Runner) Abort(ctx context.Context, err error) error {
	r.init()
	ctx = r.logger.WithContext(ctx)
	code := ExitCode(err)
	r.logger.Error().Err(err).Int("exit_code", code).Msg("run could not start")
	if !r.DryRun {
		r.Pinger.Finish(ctx, r.id, code, []byte(err.Error()))
	}
	return Logged(err)
}

// Run executes fn under the contract and returns the run's error, already logged (see
// ExitCode for the process exit code; nil is success). db is used
// for the lock and the job_runs row; in a dry run neither is taken or written (a dry
// run only reads, so it may run beside a real one, with a SELECT-only user).
func (r *Runner) Run(ctx context.Context, db *sql.DB, fn func(ctx context.Context) (*Report, error)) error {
	r.init()
	log := r.logger
	ctx = log.WithContext(ctx)
	ctx = WithInfo(ctx, Info{ID: r.id, Job: r.Job, DryRun: r.DryRun, Start: r.start})
	if r.Progress != nil {
		ctx = WithProgress(ctx, r.Progress)
		defer r.Progress.Done()
	}

	var lock *mysql.Lock
	if !r.DryRun {
		var err error
		lock, err = mysql.AcquireJobLock(ctx, db, r.Job, r.LockWait)
		if errors.Is(err, mysql.ErrLocked) {
			log.Warn().Dur("lock_wait", r.LockWait).Msg("another run holds the lock; exiting")
			return Logged(err)
		}
		if err != nil {
			return r.Abort(ctx, err)
		}
		defer func() {
			if err := lock.Release(); err != nil {
				log.Warn().Err(err).Msg("release lock")
			}
		}()
		if err := r.recordStart(ctx, db); err != nil {
			return r.Abort(ctx, err)
		}
		r.Pinger.Start(ctx, r.id)
	}
	log.Info().Strs("args", r.Args).Msg("run started")

	runCtx := ctx
	if r.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, r.Timeout, fmt.Errorf("%w after %s", ErrTimeout, r.Timeout))
		defer cancel()
	}
	halt := func() {}
	if lock != nil {
		var stop func()
		runCtx, halt, stop = r.watchLock(runCtx, lock)
		defer stop()
	}
	rep, err := r.call(runCtx, fn)
	// From here on the lock's session carries the last check and the final record:
	// the watcher must not use it at the same time.
	halt()
	// A run shorter than LockCheck never saw its lock's session die (a MySQL restart,
	// a cut connection): another run may have started meanwhile, and the work it did
	// after the cut may not have been saved. It has not completed: say so (exit 1).
	if lock != nil && runCtx.Err() == nil && ExitCode(err) != ExitFailed {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if aerr := lock.Alive(actx); aerr != nil {
			log.Error().Err(aerr).Str("dependency", "mysql").Msg("lock lost during the run: MySQL went away")
			err = fmt.Errorf("%w: %w", ErrLockLost, aerr)
		}
		cancel()
	}
	// The bar goes before the report and the last log lines are printed.
	r.Progress.Done()
	if rep == nil {
		rep = NewReport(r.Job)
	}
	rep.Job, rep.RunID, rep.DryRun = r.Job, r.id, r.DryRun
	status, err := Outcome(runCtx, rep, err)
	code := ExitCode(err)
	elapsed := r.now().Sub(r.start)

	var out bytes.Buffer
	if werr := rep.Write(&out, r.Output); werr != nil {
		log.Error().Err(werr).Msg("render report")
	}
	if r.Stdout != nil {
		_, _ = r.Stdout.Write(out.Bytes())
	}

	ev := log.Info()
	if code != ExitOK && code != ExitPartial {
		ev = log.Error().Err(err)
		if dep := UnreachableDependency(err); dep != "" {
			ev = ev.Str("dependency", dep)
		}
	} else if code == ExitPartial {
		ev = log.Warn().Int("problems", len(rep.Problems))
	}
	ev.Str("status", string(status)).Int("exit_code", code).Float64("duration_seconds", elapsed.Seconds()).
		Interface("counts", rep.Counts).Msg("run finished")

	if r.DryRun {
		return Logged(err)
	}
	if rerr := r.recordEnd(ctx, db, lock, status, code, rep, err); rerr != nil {
		log.Error().Err(rerr).Msg("record run end")
		if code == ExitOK {
			err, code = rerr, ExitFailed
		}
	}
	m := Metrics{Job: r.Job, Host: r.Host, Success: code == ExitOK || code == ExitPartial,
		ExitCode: code, Start: r.start, Duration: elapsed, Counts: rep.Counts}
	if r.MetricsFile != "" {
		if merr := WriteTextfile(r.MetricsFile, m); merr != nil {
			log.Warn().Err(merr).Msg("write metrics file")
		}
	}
	if r.Pushgateway != "" {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if perr := Push(pctx, r.HTTPClient, r.Pushgateway, m); perr != nil {
			log.Warn().Str("error", scrubURL(perr.Error(), r.Pushgateway)).Msg("push metrics")
		}
		cancel()
	}
	r.Pinger.Finish(ctx, r.id, code, out.Bytes())
	return Logged(err)
}

// ErrLockLost is the cancellation cause when the session holding the job's lock dies
// (a MySQL restart, a network cut): another run may then start, so this one stops.
var ErrLockLost = errors.New("lost the job's lock")

// watchLock checks every LockCheck (default 30s) that the lock's session is alive,
// and cancels the run when it is not. halt stops the checks and waits for one in
// flight (it may be called more than once); stop also ends the context.
func (r *Runner) watchLock(ctx context.Context, lock *mysql.Lock) (_ context.Context, halt, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	every := r.LockCheck
	if every == 0 {
		every = 30 * time.Second
	}
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				err := lock.Alive(cctx)
				ccancel()
				if err != nil && ctx.Err() == nil {
					r.logger.Error().Err(err).Msg("lock lost; stopping the run")
					cancel(fmt.Errorf("%w: %v", ErrLockLost, err))
					return
				}
			}
		}
	}()
	var once sync.Once
	halt = func() {
		once.Do(func() { close(done) })
		<-exited
	}
	return ctx, halt, func() { halt(); cancel(nil) }
}

// call runs fn, turning a panic into an error so the run is still recorded as failed.
func (r *Runner) call(ctx context.Context, fn func(context.Context) (*Report, error)) (rep *Report, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
			r.logger.Error().Str("panic", fmt.Sprint(p)).Stack().Msg("job panicked")
		}
	}()
	return fn(ctx)
}

func (r *Runner) recordStart(ctx context.Context, db *sql.DB) error {
	_, err := db.ExecContext(ctx, `INSERT INTO job_runs (id, job, host, version, args, started_at, status)
		VALUES (?, ?, ?, ?, ?, ?, 'running')`,
		r.id, r.Job, r.Host, r.Version, strings.Join(r.Args, " "), r.start)
	if err != nil {
		return fmt.Errorf("record run start: %w", err)
	}
	return nil
}

// recordEndTimeout bounds writing the run's final job_runs record. It is generous on
// purpose: a run that stopped because MySQL is slow (2 s a round trip) must still
// say so, or its row stays 'running'. The record goes first over the lock's session,
// which is already open; a fresh connection (handshake, session settings) costs
// several round trips more.
const recordEndTimeout = 60 * time.Second

func (r *Runner) recordEnd(ctx context.Context, db *sql.DB, lock *mysql.Lock, status Status, code int, rep *Report, runErr error) error {
	// The run's context may be cancelled (timeout, SIGTERM): record with a fresh one.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordEndTimeout)
	defer cancel()
	counts, err := json.Marshal(rep.Counts)
	if err != nil {
		return err
	}
	var msg sql.NullString
	if runErr != nil {
		msg = sql.NullString{String: runErr.Error(), Valid: true}
	}
	args := []any{r.now(), string(status), code, string(counts), msg, r.id}
	if lock != nil {
		if _, err = lock.Session().ExecContext(ctx, recordEndSQL, args...); err == nil {
			return nil
		}
		// The lock's session is gone (MySQL restarted): try the pool.
		r.logger.Debug().Err(err).Msg("record run end on the lock's session")
	}
	_, err = db.ExecContext(ctx, recordEndSQL, args...)
	if err != nil {
		return fmt.Errorf("record run end: %w", err)
	}
	return nil
}

// recordEndSQL writes a run's final state.
const recordEndSQL = `UPDATE job_runs SET finished_at = ?, status = ?, exit_code = ?, counts = ?, error = ?
		WHERE id = ?`

func scrubURL(s, u string) string {
	if u == "" {
		return s
	}
	return strings.ReplaceAll(s, u, "<pushgateway>")
}
