package run

import (
	"context"
	"errors"
	"fmt"

	"github.com/cronkit/cronkit/lib/mysql"
)

// The exit codes of every `jobs` command, in one place (README: "Exit codes"). Cron,
// systemd and Kubernetes act on them, so they never change meaning.
const (
	ExitOK          = 0   // the run did everything it had to
	ExitFailed      = 1   // the run stopped on an error (or ran out of --timeout)
	ExitUsage       = 2   // bad flags, arguments or configuration: nothing was done
	ExitPartial     = 3   // finished, with item-level errors or discrepancies reported
	ExitLocked      = 75  // another run of the job holds its lock: retry later (EX_TEMPFAIL)
	ExitInterrupted = 130 // SIGINT or SIGTERM: work in flight finished or rolled back
)

// ErrUsage marks an error caused by the caller's flags, arguments or configuration.
var ErrUsage = errors.New("usage")

// ErrInterrupted is the cancellation cause the binary gives when a signal arrives,
// so a run can tell "stopped by ops" from "ran out of time".
var ErrInterrupted = errors.New("interrupted by signal")

// ErrTimeout is the cancellation cause when --timeout expires.
var ErrTimeout = errors.New("timeout")

// Status is a job_runs status.
type Status string

// The statuses a run ends in.
const (
	StatusRunning   Status = "running"
	StatusOK        Status = "ok"
	StatusFailed    Status = "failed"
	StatusPartial   Status = "partial"
	StatusCancelled Status = "cancelled"
)

// ErrPartial is a run that finished with item-level errors or discrepancies in its
// report (exit 3): the rest of the work was done.
var ErrPartial = errors.New("finished with problems")

// ExitCode maps an error to the exit-code table. It is the only place that decides
// an exit code (restic's ComputeExitCode is the model): commands return errors, the
// binary exits with ExitCode(err).
func ExitCode(err error) int {
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, ErrInterrupted):
		return ExitInterrupted
	case errors.Is(err, ErrUsage), errors.Is(err, mysql.ErrSchema):
		return ExitUsage
	case errors.Is(err, mysql.ErrLocked):
		return ExitLocked
	case errors.Is(err, ErrUnreachable):
		// A dependency down stops the run even if items also had problems.
		return ExitFailed
	case errors.Is(err, ErrPartial):
		return ExitPartial
	default:
		return ExitFailed
	}
}

// Outcome is what a run produced, as the contract sees it: the run's error (nil, or
// one ExitCode maps: a cancellation carries its cause, problems in the report make
// ErrPartial) and the job_runs status that goes with it.
func Outcome(ctx context.Context, rep *Report, err error) (Status, error) {
	if ctx.Err() != nil {
		// Record why the run stopped (timeout, signal), not a bare "context canceled".
		cause := context.Cause(ctx)
		switch {
		case err == nil, errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
			err = cause
		case !errors.Is(err, cause):
			err = fmt.Errorf("%w: %w", cause, err)
		}
		return StatusCancelled, err
	}
	if err == nil && rep != nil && len(rep.Problems) > 0 {
		return StatusPartial, fmt.Errorf("%w: %d problem(s) in the report", ErrPartial, len(rep.Problems))
	}
	switch ExitCode(err) {
	case ExitOK:
		return StatusOK, nil
	case ExitInterrupted:
		return StatusCancelled, err
	}
	return StatusFailed, err
}

// loggedError is an error the run's log already carries: the binary exits with its
// code and prints nothing more (stderr stays one log format).
type loggedError struct{ err error }

func (e loggedError) Error() string { return e.err.Error() }
func (e loggedError) Unwrap() error { return e.err }

// Logged marks err as already logged with the run's context.
func Logged(err error) error {
	if err == nil {
		return nil
	}
	return loggedError{err}
}

// IsLogged reports whether err was marked by Logged.
func IsLogged(err error) bool {
	var l loggedError
	return errors.As(err, &l)
}

type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Usagef returns an error that is ErrUsage (exit 2) with a message of its own.
func Usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}
