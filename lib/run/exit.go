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

// Outcome maps what a run produced to its status and exit code. It is the only place
// that decides an exit code from an error.
func Outcome(ctx context.Context, rep *Report, err error) (Status, int) {
	switch cause := context.Cause(ctx); {
	case ctx.Err() != nil && errors.Is(cause, ErrInterrupted):
		return StatusCancelled, ExitInterrupted
	case ctx.Err() != nil:
		return StatusCancelled, ExitFailed
	}
	switch {
	case err == nil && rep != nil && len(rep.Problems) > 0:
		return StatusPartial, ExitPartial
	case err == nil:
		return StatusOK, ExitOK
	case errors.Is(err, ErrUsage):
		return StatusFailed, ExitUsage
	case errors.Is(err, mysql.ErrLocked):
		return StatusFailed, ExitLocked
	case errors.Is(err, ErrInterrupted):
		return StatusCancelled, ExitInterrupted
	default:
		return StatusFailed, ExitFailed
	}
}

type usageError struct{ msg string }

func (e usageError) Error() string        { return e.msg }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// Usagef returns an error that is ErrUsage (exit 2) with a message of its own.
func Usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}
