package run

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cronkit/cronkit/lib/mysql"
)

func TestExitCodeTable(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("stripe unreachable"), ExitFailed},
		{Usagef("--output %q: want text or json", "yaml"), ExitUsage},
		{fmt.Errorf("open: %w", Usagef("no database")), ExitUsage},
		{fmt.Errorf("check: %w", mysql.ErrSchema), ExitUsage},
		{fmt.Errorf("lock cronkit.x.billing: %w", mysql.ErrLocked), ExitLocked},
		{fmt.Errorf("%w: 2 problem(s)", ErrPartial), ExitPartial},
		{fmt.Errorf("%w: SIGTERM", ErrInterrupted), ExitInterrupted},
		{fmt.Errorf("%w after 1m", ErrTimeout), ExitFailed},
		{Logged(fmt.Errorf("%w: 1 problem(s)", ErrPartial)), ExitPartial},
		// A signal wins over whatever the interrupted work returned.
		{fmt.Errorf("%w: %w", ErrInterrupted, Usagef("x")), ExitInterrupted},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestOutcome(t *testing.T) {
	rep := NewReport("j")
	if st, err := Outcome(context.Background(), rep, nil); st != StatusOK || err != nil {
		t.Fatalf("clean run: %s %v", st, err)
	}
	rep.Problem("unrated", "account 1", "no price")
	if st, err := Outcome(context.Background(), rep, nil); st != StatusPartial || ExitCode(err) != ExitPartial {
		t.Fatalf("problems: %s %v", st, err)
	}
	if st, err := Outcome(context.Background(), rep, errors.New("db gone")); st != StatusFailed || ExitCode(err) != ExitFailed {
		t.Fatalf("error beats problems: %s %v", st, err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(fmt.Errorf("%w: terminated", ErrInterrupted))
	st, err := Outcome(ctx, rep, context.Canceled)
	if st != StatusCancelled || ExitCode(err) != ExitInterrupted || err.Error() != "interrupted by signal: terminated" {
		t.Fatalf("signal: %s %v", st, err)
	}
	ctx, cancel = context.WithCancelCause(context.Background())
	cancel(fmt.Errorf("%w after 1s", ErrTimeout))
	if st, err := Outcome(ctx, nil, errors.New("rate hour: context canceled")); st != StatusCancelled || ExitCode(err) != ExitFailed ||
		err.Error() != "timeout after 1s: rate hour: context canceled" {
		t.Fatalf("timeout: %s %v", st, err)
	}
	if IsLogged(err) || !IsLogged(fmt.Errorf("wrapped: %w", Logged(err))) {
		t.Fatal("Logged marks survive wrapping, and only marked errors are logged")
	}
}
