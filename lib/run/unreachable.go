package run

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"
)

// ErrUnreachable marks a run that stopped because a dependency (Stripe, CloudStack,
// the SMTP relay) could not be reached at all: calling it for every remaining item
// would only fail each of them, so the job stops calling it and the run exits 1
// (README: "Failure modes"). An answer the dependency did give (a decline, a 5xx, a
// CloudStack errorcode) is never this: it is the item's problem (exit 3).
var ErrUnreachable = errors.New("dependency unreachable")

// UnreachableError is the run's error when a job stopped calling an unreachable
// dependency: which one, why, and how many items it left for the next run.
type UnreachableError struct {
	// Dependency is the dependency's name as the README and the logs say it
	// ("stripe", "cloudstack", "smtp").
	Dependency string
	// Left is how many items were not done because of it (-1: not known, e.g.
	// queued mail the relay never saw).
	Left int
	// Err is the transport error of the first call that failed.
	Err error
}

// Error reads "stripe unreachable: <cause>; 3 item(s) left for the next run".
func (e *UnreachableError) Error() string {
	left := "what is left waits for the next run"
	if e.Left >= 0 {
		left = fmt.Sprintf("%d item(s) left for the next run", e.Left)
	}
	return fmt.Sprintf("%s unreachable: %v; %s", e.Dependency, e.Err, left)
}

// Unwrap exposes the transport error.
func (e *UnreachableError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrUnreachable) true.
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// Unreachable is the run's error for a job that stopped calling dep after err, with
// left items not done.
func Unreachable(dep string, err error, left int) error {
	return &UnreachableError{Dependency: dep, Left: left, Err: err}
}

// UnreachableDependency returns the dependency an ErrUnreachable error names, or "".
func UnreachableDependency(err error) string {
	var u *UnreachableError
	if errors.As(err, &u) {
		return u.Dependency
	}
	return ""
}

// IsUnreachable reports whether err, from an HTTP or SMTP client, is a failure at the
// transport level before the dependency answered anything: a refused or failed dial
// (including a dial timeout), a DNS failure, an unreachable host or network, a
// connection reset or closed before any response, a TLS handshake that timed out.
// Answers (an HTTP 402 or 500, a Stripe card error, a CloudStack errorcode, an SMTP
// 5xx) and a response that was merely slow (the client's or the run's deadline while
// waiting for it) are not. A cancelled context is not either: the caller checks its
// own context first.
func IsUnreachable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return true
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	for _, errno := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.ECONNABORTED,
		syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EPIPE} {
		if errors.Is(err, errno) {
			return true
		}
	}
	// The peer closed the connection before a response: Go's HTTP client says EOF.
	// Only inside a request or network error: a bare EOF may be a body that was
	// read to its end.
	var ue *url.Error
	if (errors.As(err, &ue) || op != nil) && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
		return true
	}
	// net/http's handshake timeout has no exported type.
	return strings.Contains(err.Error(), "TLS handshake timeout")
}
