package crontab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// every is a schedule faster than cron allows, so scheduler tests take milliseconds.
type every time.Duration

func (d every) Next(t time.Time) time.Time { return t.Add(time.Duration(d)) }

// logBuffer collects the scheduler's JSON log lines; goroutines write to it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the decoded log lines whose message is msg.
func (b *logBuffer) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["message"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitFor polls cond for up to two seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stepClock advances one second per call, so logged durations are exact.
func stepClock() func() time.Time {
	var n atomic.Int64
	return func() time.Time {
		return time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC).Add(time.Duration(n.Add(1)) * time.Second)
	}
}

func testEntry() Entry {
	return Entry{Name: "cronkit-billing", Args: []string{"billing", "--timeout", "50m"}, Schedule: every(20 * time.Millisecond)}
}

func runScheduler(t *testing.T, s *Scheduler) (context.CancelFunc, <-chan error, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(zerolog.New(logs).WithContext(context.Background()))
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(cancel)
	return cancel, done, logs
}

func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// exitError returns a real *exec.ExitError for code, from a child shell.
func exitError(t *testing.T, script string) error {
	t.Helper()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to produce an exit status")
	}
	err = exec.Command(sh, "-c", script).Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("sh -c %q: %v, want an exit error", script, err)
	}
	return err
}

func TestSchedulerSkipsTickWhileRunning(t *testing.T) {
	release := make(chan struct{})
	var starts atomic.Int32
	childErr := exitError(t, "exit 3")
	s := &Scheduler{
		Entries: []Entry{testEntry()},
		Now:     stepClock(),
		Start: func(ctx context.Context, e Entry) (func() error, error) {
			starts.Add(1)
			return func() error { <-release; return childErr }, nil
		},
	}
	cancel, done, logs := runScheduler(t, s)

	waitFor(t, "two skipped ticks", func() bool { return len(logs.lines(t, "skipped: previous run still running")) >= 2 })
	if n := starts.Load(); n != 1 {
		t.Fatalf("%d starts while the first run was still going, want 1", n)
	}
	skip := logs.lines(t, "skipped: previous run still running")[0]
	if skip["entry"] != "cronkit-billing" || skip["level"] != "warn" || skip["running_since"] == nil || skip["skipped"] != 1.0 {
		t.Errorf("skip line %v, want entry, warn level, running_since and skipped 1", skip)
	}
	if second := logs.lines(t, "skipped: previous run still running")[1]; second["skipped"] != 2.0 {
		t.Errorf("second skip line %v, want skipped 2 (counted)", second)
	}

	close(release) // the run ends: later ticks start again
	waitFor(t, "a second start", func() bool { return starts.Load() >= 2 })
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}

	started := logs.lines(t, "job started")
	finished := logs.lines(t, "job finished")
	if len(started) < 2 || len(finished) != len(started) {
		t.Fatalf("%d started and %d finished lines, want as many, at least 2", len(started), len(finished))
	}
	f := finished[0]
	if f["entry"] != "cronkit-billing" || f["exit_code"] != 3.0 || f["duration"] != 1000.0 || f["level"] != "error" {
		t.Errorf("finish line %v, want entry, exit_code 3, duration 1000 (ms), level error", f)
	}
	if args, _ := f["args"].([]any); !slices.Equal(args, []any{"billing", "--timeout", "50m"}) {
		t.Errorf("finish line args %v", f["args"])
	}
}

func TestSchedulerCancelWaitsForRunningChild(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	var starts atomic.Int32
	var childCtxErr atomic.Value
	s := &Scheduler{
		Entries: []Entry{testEntry()},
		Start: func(ctx context.Context, e Entry) (func() error, error) {
			if starts.Add(1) == 1 {
				close(started)
			}
			return func() error {
				<-release
				childCtxErr.Store(fmt.Sprint(ctx.Err()))
				return nil
			}, nil
		},
	}
	cancel, done, logs := runScheduler(t, s)
	<-started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while the child was running", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := waitRun(t, done); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := starts.Load(); n != 1 {
		t.Errorf("%d starts, want 1 (no run starts once stopping)", n)
	}
	if got := childCtxErr.Load(); got != "<nil>" {
		t.Errorf("child context error %v: the child must not be cancelled by the stop", got)
	}
	if f := logs.lines(t, "job finished"); len(f) != 1 || f[0]["exit_code"] != 0.0 || f[0]["level"] != "info" {
		t.Errorf("finish lines %v, want one with exit_code 0 at info", f)
	}
	if len(logs.lines(t, "scheduler stopped")) != 1 {
		t.Error("no 'scheduler stopped' line")
	}
}

func TestSchedulerStopTimeout(t *testing.T) {
	started := make(chan struct{})
	var once sync.Once
	childCancelled := make(chan struct{})
	s := &Scheduler{
		Entries:     []Entry{testEntry()},
		StopTimeout: 50 * time.Millisecond,
		Start: func(ctx context.Context, e Entry) (func() error, error) {
			once.Do(func() { close(started) })
			return func() error {
				<-ctx.Done() // a child that only ends when killed
				close(childCancelled)
				return ctx.Err()
			}, nil
		},
	}
	cancel, done, _ := runScheduler(t, s)
	<-started
	stop := time.Now()
	cancel()
	err := waitRun(t, done)
	if !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("Run: %v, want ErrStopTimeout", err)
	}
	if elapsed := time.Since(stop); elapsed < s.StopTimeout {
		t.Errorf("Run returned after %s, before StopTimeout %s", elapsed, s.StopTimeout)
	}
	select {
	case <-childCancelled:
	case <-time.After(2 * time.Second):
		t.Error("the child's context was not cancelled after StopTimeout")
	}
}

func TestSchedulerRetriesAfterStartFailure(t *testing.T) {
	var starts atomic.Int32
	s := &Scheduler{
		Entries: []Entry{testEntry()},
		Start: func(ctx context.Context, e Entry) (func() error, error) {
			if starts.Add(1) == 1 {
				return nil, errors.New("fork: resource temporarily unavailable")
			}
			return func() error { return nil }, nil
		},
	}
	cancel, done, logs := runScheduler(t, s)
	waitFor(t, "a finished run after a failed start", func() bool { return len(logs.lines(t, "job finished")) >= 1 })
	cancel()
	if err := waitRun(t, done); err != nil {
		t.Fatal(err)
	}
	if f := logs.lines(t, "job start failed"); len(f) != 1 || !strings.Contains(fmt.Sprint(f[0]["error"]), "fork") {
		t.Errorf("start failure lines %v, want one with the error", f)
	}
}

func TestSchedulerRefusesBadSetup(t *testing.T) {
	start := func(context.Context, Entry) (func() error, error) { return func() error { return nil }, nil }
	tests := []struct {
		name string
		s    Scheduler
		want string
	}{
		{"no entries", Scheduler{Start: start}, "no entries"},
		{"no Start", Scheduler{Entries: []Entry{testEntry()}}, "no Start"},
		{"bad spec", Scheduler{Entries: []Entry{{Source: "c.cron", Line: 4, Spec: "61 * * * *", Args: []string{"billing"}}}, Start: start}, "c.cron:4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run: %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	exit3 := exitError(t, "exit 3")
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"success", nil, 0},
		{"exit status", exit3, 3},
		{"wrapped", fmt.Errorf("run billing: %w", exit3), 3},
		{"lock held", exitError(t, "exit 75"), 75},
		{"killed by SIGTERM", exitError(t, "kill -TERM $$"), 143},
		{"never started", errors.New("exec: not found"), -1},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("%s: ExitCode(%v) = %d, want %d", tt.name, tt.err, got, tt.want)
		}
	}
}
