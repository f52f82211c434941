package run

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql"
	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// jobSuffix keeps this package's lock names (cronkit.<job>) apart from those of
// other packages' tests running at the same time on the same server.
var jobSuffix = fmt.Sprintf("-runtest%d", os.Getpid())

func newRunner(job string, stdout, stderr *syncBuffer) *Runner {
	job += jobSuffix
	return &Runner{Job: job, Host: "test-host", Version: "test", Args: []string{job},
		Stdout: stdout, Stderr: stderr, Output: "text", LogFormat: "json"}
}

// logLines parses every stderr line as JSON and checks the run context is on each.
func logLines(t *testing.T, stderr string, runID, job string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if m["run_id"] != runID || m["job"] != job+jobSuffix || m["host"] != "test-host" || m["version"] != "test" {
			t.Fatalf("log line lacks run context: %q", sc.Text())
		}
		if _, ok := m["dry_run"]; !ok {
			t.Fatalf("log line lacks dry_run: %q", sc.Text())
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		t.Fatal("no log lines")
	}
	return out
}

func jobRun(t *testing.T, db *mysqltest.DB, id string) (status string, code int, errText string) {
	t.Helper()
	var e *string
	if err := db.QueryRow("SELECT status, exit_code, error FROM job_runs WHERE id = ?", id).Scan(&status, &code, &e); err != nil {
		t.Fatalf("job_runs row %s: %v", id, err)
	}
	if e != nil {
		errText = *e
	}
	return status, code, errText
}

func countRuns(t *testing.T, db *mysqltest.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM job_runs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRunRecordsAndLogsContext(t *testing.T) {
	db := mysqltest.New(t)
	var stdout, stderr syncBuffer
	r := newRunner("billing", &stdout, &stderr)
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		if FromContext(ctx).ID != r.ID() {
			t.Error("run info missing from context")
		}
		rep := NewReport("billing")
		rep.Count("charges_written", 2)
		rep.Act("rate", "hour 1", "")
		return rep, nil
	}))
	if code != ExitOK {
		t.Fatalf("code = %d", code)
	}
	status, exit, _ := jobRun(t, db, r.ID())
	if status != "ok" || exit != 0 {
		t.Fatalf("job_runs: %s %d", status, exit)
	}
	logLines(t, stderr.String(), r.ID(), "billing")
	if !strings.Contains(stdout.String(), "charges_written") {
		t.Fatalf("report not printed: %q", stdout.String())
	}
}

func TestProblemsExitThree(t *testing.T) {
	db := mysqltest.New(t)
	var stdout, stderr syncBuffer
	r := newRunner("reconcile", &stdout, &stderr)
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		rep := NewReport("reconcile")
		rep.Problem("amount_mismatch", "invoice 3", "")
		return rep, nil
	}))
	if code != ExitPartial {
		t.Fatalf("code = %d, want 3", code)
	}
	if status, _, _ := jobRun(t, db, r.ID()); status != "partial" {
		t.Fatalf("status = %s", status)
	}
}

func TestConcurrentRunsOneExits75(t *testing.T) {
	db := mysqltest.New(t)
	started := make(chan struct{})
	release := make(chan struct{})
	var wg sync.WaitGroup
	var firstCode int
	var first *Runner
	wg.Add(1)
	firstDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(firstDone)
		var o, e syncBuffer
		first = newRunner("billing", &o, &e)
		firstCode = ExitCode(first.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
			close(started)
			<-release
			return NewReport("billing"), nil
		}))
	}()
	select {
	case <-started:
	case <-firstDone:
		t.Fatalf("first run never started its job: exit %d", firstCode)
	}
	var o, e syncBuffer
	second := newRunner("billing", &o, &e)
	called := false
	code := ExitCode(second.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		called = true
		return nil, nil
	}))
	close(release)
	wg.Wait()
	if code != ExitLocked || called {
		t.Fatalf("second run: code %d, job called %v; want 75 and not called", code, called)
	}
	if firstCode != ExitOK {
		t.Fatalf("first run: %d", firstCode)
	}
	if n := countRuns(t, db); n != 1 {
		t.Fatalf("job_runs rows = %d, want only the first run's", n)
	}
	logLines(t, e.String(), second.ID(), "billing")
	if o.String() != "" {
		t.Fatalf("locked run printed a report: %q", o.String())
	}
}

func TestLockWaitRunsAfterHolder(t *testing.T) {
	db := mysqltest.New(t)
	started := make(chan struct{})
	done := make(chan int)
	go func() {
		var o, e syncBuffer
		done <- ExitCode(newRunner("abuse", &o, &e).Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
			close(started)
			time.Sleep(1200 * time.Millisecond)
			return nil, nil
		}))
	}()
	select {
	case <-started:
	case code := <-done:
		t.Fatalf("holder never started its job: exit %d", code)
	}
	var o, e syncBuffer
	r := newRunner("abuse", &o, &e)
	r.LockWait = 10 * time.Second
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) { return nil, nil }))
	if code != ExitOK || <-done != ExitOK {
		t.Fatalf("waiting run: %d", code)
	}
	if n := countRuns(t, db); n != 2 {
		t.Fatalf("job_runs rows = %d, want 2", n)
	}
}

func TestTimeoutCancelsAndRecords(t *testing.T) {
	db := mysqltest.New(t)
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	r.Timeout = 200 * time.Millisecond
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		<-ctx.Done() // work in flight notices and stops
		return NewReport("billing"), ctx.Err()
	}))
	if code != ExitFailed {
		t.Fatalf("code = %d, want 1 (timeout is a failure)", code)
	}
	status, exit, msg := jobRun(t, db, r.ID())
	if status != "cancelled" || exit != 1 || !strings.Contains(msg, "timeout") {
		t.Fatalf("job_runs: %s %d %q", status, exit, msg)
	}
}

func TestInterruptCancelsAndRecords(t *testing.T) {
	db := mysqltest.New(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	code := ExitCode(r.Run(ctx, db.DB, func(ctx context.Context) (*Report, error) {
		cancel(fmt.Errorf("%w: terminated", ErrInterrupted))
		<-ctx.Done()
		return nil, nil // even a job that returns nil error was cancelled
	}))
	if code != ExitInterrupted {
		t.Fatalf("code = %d, want 130", code)
	}
	if status, exit, msg := jobRun(t, db, r.ID()); status != "cancelled" || exit != 130 || !strings.Contains(msg, "interrupted") {
		t.Fatalf("job_runs: %s %d %q", status, exit, msg)
	}
}

func TestFailureAndPanicAreRecorded(t *testing.T) {
	db := mysqltest.New(t)
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		return nil, errors.New("stripe unreachable")
	}))
	if status, exit, msg := jobRun(t, db, r.ID()); code != 1 || status != "failed" || exit != 1 || msg != "stripe unreachable" {
		t.Fatalf("failed run: code %d row %s %d %q", code, status, exit, msg)
	}
	var o2, e2 syncBuffer
	r2 := newRunner("billing", &o2, &e2)
	code = ExitCode(r2.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) { panic("boom") }))
	if status, _, msg := jobRun(t, db, r2.ID()); code != 1 || status != "failed" || !strings.Contains(msg, "boom") {
		t.Fatalf("panicked run: code %d row %s %q", code, status, msg)
	}
}

func TestDryRunWritesNothingWithSelectOnlyUser(t *testing.T) {
	db := mysqltest.New(t)
	roDSN := db.SelectOnlyUser(t)
	ro, err := openRO(roDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	r.DryRun = true
	pings := &pingRecorder{}
	srv := httptest.NewServer(pings.handler(200))
	defer srv.Close()
	r.Pinger = &Pinger{URL: srv.URL, Client: srv.Client()}
	r.MetricsFile = filepath.Join(t.TempDir(), "m.prom")
	code := ExitCode(r.Run(context.Background(), ro, func(ctx context.Context) (*Report, error) {
		var n int
		if err := ro.QueryRowContext(ctx, "SELECT COUNT(*) FROM job_runs").Scan(&n); err != nil {
			return nil, err
		}
		rep := NewReport("billing")
		rep.Act("rate", "hour 1", "would write 3 charges")
		return rep, nil
	}))
	if code != ExitOK {
		t.Fatalf("dry run code = %d; log:\n%s", code, e.String())
	}
	if n := countRuns(t, db); n != 0 {
		t.Fatalf("dry run wrote %d job_runs rows", n)
	}
	if len(pings.got()) != 0 {
		t.Fatalf("dry run pinged: %v", pings.got())
	}
	if _, err := os.Stat(r.MetricsFile); !os.IsNotExist(err) {
		t.Fatalf("dry run wrote metrics: %v", err)
	}
	if !strings.Contains(o.String(), "dry run") || !strings.Contains(o.String(), "WOULD") {
		t.Fatalf("dry-run report: %q", o.String())
	}
	for _, l := range logLines(t, e.String(), r.ID(), "billing") {
		if l["dry_run"] != true {
			t.Fatalf("dry_run field not true: %v", l)
		}
	}
}

func TestRunPingsAndMetrics(t *testing.T) {
	db := mysqltest.New(t)
	pings := &pingRecorder{}
	srv := httptest.NewServer(pings.handler(200))
	defer srv.Close()
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	r.Pinger = &Pinger{URL: srv.URL + "/uuid", Client: srv.Client()}
	r.MetricsFile = filepath.Join(t.TempDir(), "cronkit_billing.prom")
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		rep := NewReport("billing")
		rep.Count("charges_written", 5)
		rep.Problem("unpriced", "account 1", "")
		return rep, nil
	}))
	if code != ExitPartial {
		t.Fatalf("code = %d", code)
	}
	got := pings.got()
	if len(got) != 2 || got[0] != "POST /uuid/start?rid="+r.ID() || got[1] != "POST /uuid/3?rid="+r.ID() {
		t.Fatalf("pings = %v", got)
	}
	b, err := os.ReadFile(r.MetricsFile)
	if err != nil {
		t.Fatal(err)
	}
	m := parseExposition(t, b)
	job := `job="` + r.Job + `"`
	if m[`cronkit_job_items_total{`+job+`,kind="charges_written"}`] != 5 || m[`cronkit_job_last_exit_code{`+job+`}`] != 3 {
		t.Fatalf("metrics:\n%s", b)
	}
	if _, ok := m[`cronkit_job_last_success_timestamp_seconds{`+job+`}`]; !ok {
		t.Fatalf("exit 3 is a finished run and counts as success for staleness alerts:\n%s", b)
	}
}

func TestPingEndpointDownNeverFailsTheJob(t *testing.T) {
	db := mysqltest.New(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	r.Pinger = &Pinger{URL: url + "/secret-check-uuid", Retries: 1, Backoff: time.Millisecond}
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) { return nil, nil }))
	if code != ExitOK {
		t.Fatalf("code = %d", code)
	}
	if !strings.Contains(e.String(), "ping failed") {
		t.Fatalf("ping failure not logged: %s", e.String())
	}
	if strings.Contains(e.String(), "secret-check-uuid") {
		t.Fatalf("ping URL secret in log: %s", e.String())
	}
}

func TestLostLockCancelsTheRun(t *testing.T) {
	db := mysqltest.New(t)
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	r.LockCheck = 50 * time.Millisecond
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		// Kill the session that holds the job's lock, as a server restart would.
		var holder int64
		if err := db.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", mysql.LockName(db.Name, r.Job)).Scan(&holder); err != nil {
			return nil, err
		}
		if _, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", holder)); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Second):
			return nil, errors.New("run was not cancelled")
		}
	}))
	if code != ExitFailed {
		t.Fatalf("code = %d, want 1", code)
	}
	if status, _, msg := jobRun(t, db, r.ID()); status != "cancelled" || !strings.Contains(msg, "lost the job's lock") {
		t.Fatalf("job_runs: %s %q", status, msg)
	}
}

// A run shorter than LockCheck whose lock's session died (a MySQL restart) is not
// reported as done: the check when the job returns makes it a failure (exit 1), even
// when the job itself saw nothing wrong.
func TestLockLostBeforeTheFirstCheckFailsTheRun(t *testing.T) {
	db := mysqltest.New(t)
	var o, e syncBuffer
	r := newRunner("billing", &o, &e)
	r.LockCheck = time.Hour
	code := ExitCode(r.Run(context.Background(), db.DB, func(ctx context.Context) (*Report, error) {
		var holder int64
		if err := db.QueryRowContext(ctx, "SELECT IS_USED_LOCK(?)", mysql.LockName(db.Name, r.Job)).Scan(&holder); err != nil {
			return nil, err
		}
		_, err := db.ExecContext(ctx, fmt.Sprintf("KILL %d", holder))
		return NewReport("billing"), err
	}))
	if code != ExitFailed {
		t.Fatalf("code = %d, want 1\n%s", code, e.String())
	}
	if status, _, msg := jobRun(t, db, r.ID()); status != "failed" || !strings.Contains(msg, "lost the job's lock") {
		t.Fatalf("job_runs: %s %q", status, msg)
	}
	if !strings.Contains(e.String(), `"dependency":"mysql"`) {
		t.Fatalf("no log line names mysql:\n%s", e.String())
	}
}
