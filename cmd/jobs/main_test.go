package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// syncBuffer lets a logger and a test share a buffer.
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

// jobs runs the program in-process with env as its whole environment.
func jobs(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e syncBuffer
	getenv := func(k string) string { return env[k] }
	code = runMain(context.Background(), args, getenv, &o, &e)
	return code, o.String(), e.String()
}

func countRows(t *testing.T, db *sql.DB, table string) int {
	t.Helper()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUsageErrorsExit2AndWriteNothing(t *testing.T) {
	db := mysqltest.New(t)
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nosuch"}, `unknown command "nosuch"`},
		{[]string{"noop", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"noop", "--output", "xml"}, `--output "xml"`},
		{[]string{"noop", "--timeout", "soon"}, "invalid value"},
		{[]string{"noop", "extra"}, `unexpected argument "extra"`},
		{[]string{"migrate", "sideways"}, `unexpected argument "sideways"`},
		{[]string{"history", "--output", "yaml"}, `--output "yaml"`},
	} {
		code, out, errOut := jobs(t, env, tc.args...)
		if code != 2 {
			t.Errorf("%v: code %d, want 2", tc.args, code)
		}
		if out != "" {
			t.Errorf("%v: printed to stdout: %q", tc.args, out)
		}
		if strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: stderr %q, want one line with %q", tc.args, errOut, tc.want)
		}
	}
	if n := countRows(t, db.DB, "job_runs"); n != 0 {
		t.Fatalf("usage errors wrote %d job_runs rows", n)
	}
	// No database configured is a configuration error too.
	if code, _, errOut := jobs(t, nil, "noop"); code != 2 || !strings.Contains(errOut, "CRONKIT_DB_DSN") {
		t.Fatalf("no DSN: %d %q", code, errOut)
	}
	// A bad env value names the variable.
	if code, _, errOut := jobs(t, map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_TIMEOUT": "never"}, "noop"); code != 2 || !strings.Contains(errOut, "CRONKIT_TIMEOUT") {
		t.Fatalf("bad env: %d %q", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	code, out, _ := jobs(t, nil, "--help")
	if code != 0 || !strings.Contains(out, "Exit codes") || !strings.Contains(out, "noop") {
		t.Fatalf("cronkit --help: %d %q", code, out)
	}
	code, out, _ = jobs(t, nil, "noop", "--help")
	if code != 0 || !strings.Contains(out, "CRONKIT_DB_DSN_FILE") || !strings.Contains(out, "--lock-wait") {
		t.Fatalf("cronkit noop --help: %d %q", code, out)
	}
	if code, _, _ := jobs(t, nil); code != 2 {
		t.Fatalf("jobs with no command: %d", code)
	}
}

func TestEnvAndFileConfiguration(t *testing.T) {
	db := mysqltest.New(t)
	dir := t.TempDir()
	dsnFile := filepath.Join(dir, "dsn")
	if err := os.WriteFile(dsnFile, []byte(db.DSN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := jobs(t, map[string]string{"CRONKIT_DB_DSN_FILE": dsnFile, "CRONKIT_OUTPUT": "json"}, "noop")
	if code != 0 {
		t.Fatalf("noop via _FILE: %d %s", code, errOut)
	}
	var rep struct{ Job string }
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Job != "noop" {
		t.Fatalf("CRONKIT_OUTPUT=json not applied: %q", out)
	}
	// A flag beats the environment.
	code, out, _ = jobs(t, map[string]string{"CRONKIT_DB_DSN_FILE": dsnFile, "CRONKIT_OUTPUT": "json"}, "noop", "--output", "text")
	if code != 0 || !strings.HasPrefix(out, "noop ") {
		t.Fatalf("flag over env: %d %q", code, out)
	}
	if code, _, errOut := jobs(t, map[string]string{"CRONKIT_DB_DSN_FILE": filepath.Join(dir, "missing")}, "noop"); code != 2 || !strings.Contains(errOut, "CRONKIT_DB_DSN_FILE") {
		t.Fatalf("missing _FILE: %d %q", code, errOut)
	}
	if code, out, _ := jobs(t, map[string]string{"CRONKIT_DB_DSN": db.DSN}, "history", "--job", "noop"); code != 0 || strings.Count(out, "noop") != 2 {
		t.Fatalf("history: %d %q", code, out)
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	const pw = "Sup3rSecretPw"
	ctx := context.Background()
	_ = ctx
	// Unreachable server: the connection error is logged, the password must not be.
	dsn := "cronkit:" + pw + "@tcp(127.0.0.1:1)/cronkit?timeout=1s"
	pingSecret := "http://127.0.0.1:1/ping/check-uuid-secret"
	code, out, errOut := jobs(t, map[string]string{"CRONKIT_PING_URL": pingSecret}, "noop", "--db-dsn", dsn, "--log-format", "json")
	if code != 1 {
		t.Fatalf("unreachable db: code %d, want 1: %s", code, errOut)
	}
	for _, s := range []string{pw, "check-uuid-secret"} {
		if strings.Contains(out+errOut, s) {
			t.Fatalf("secret %q leaked:\n%s", s, errOut)
		}
	}
	if !strings.Contains(errOut, "run could not start") {
		t.Fatalf("connection failure not logged: %s", errOut)
	}

	// A successful run records its args with secrets redacted.
	db := mysqltest.New(t)
	code, _, errOut = jobs(t, nil, "noop", "--db-dsn", db.DSN)
	if code != 0 {
		t.Fatalf("noop: %d %s", code, errOut)
	}
	var args string
	if err := db.QueryRow("SELECT args FROM job_runs").Scan(&args); err != nil {
		t.Fatal(err)
	}
	_, dsnPass, _ := strings.Cut(db.DSN, ":")
	dsnPass, _, _ = strings.Cut(dsnPass, "@")
	if strings.Contains(args, dsnPass) || strings.Contains(errOut, dsnPass) || !strings.Contains(args, "--db-dsn ***") {
		t.Fatalf("args recorded as %q", args)
	}
}

func TestRedactArgs(t *testing.T) {
	got := strings.Join(redactArgs([]string{"billing", "--db-dsn", "u:p@x/y", "--stripe-key=sk_live_1", "--dry-run", "-smtp-password", "pw", "--account", "4"}), " ")
	want := "billing --db-dsn *** --stripe-key=*** --dry-run -smtp-password *** --account 4"
	if got != want {
		t.Fatalf("redactArgs = %q, want %q", got, want)
	}
}

// buildJobs compiles the binary once per test binary run.
var buildOnce struct {
	sync.Once
	path string
	err  error
}

func buildJobs(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "jobs-bin")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.path = filepath.Join(dir, "jobs")
		out, err := exec.Command("go", "build", "-o", buildOnce.path, ".").CombinedOutput()
		if err != nil {
			buildOnce.err = err
			t.Logf("%s", out)
		}
	})
	if buildOnce.err != nil {
		t.Fatalf("build jobs: %v", buildOnce.err)
	}
	return buildOnce.path
}

func TestProcessSIGTERMRecordsCancelled(t *testing.T) {
	db := mysqltest.New(t)
	bin := buildJobs(t)
	cmd := exec.Command(bin, "noop", "--hold", "60s", "--log-format", "json")
	cmd.Env = []string{"CRONKIT_DB_DSN=" + db.DSN}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "run started") })
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	code := cmd.ProcessState.ExitCode()
	if code != 130 {
		t.Fatalf("exit %d (%v), want 130\n%s", code, err, stderr.String())
	}
	var status string
	var exit int
	var msg string
	if err := db.QueryRow("SELECT status, exit_code, error FROM job_runs").Scan(&status, &exit, &msg); err != nil {
		t.Fatal(err)
	}
	if status != "cancelled" || exit != 130 || !strings.Contains(msg, "terminated") {
		t.Fatalf("job_runs: %s %d %q", status, exit, msg)
	}
}

func TestProcessTimeoutAndOverlap(t *testing.T) {
	db := mysqltest.New(t)
	bin := buildJobs(t)
	env := []string{"CRONKIT_DB_DSN=" + db.DSN}
	holder := exec.Command(bin, "noop", "--hold", "3s", "--timeout", "1500ms")
	holder.Env = env
	var stderr syncBuffer
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "run started") })
	second := exec.Command(bin, "noop")
	second.Env = env
	out, _ := second.CombinedOutput()
	if c := second.ProcessState.ExitCode(); c != 75 {
		t.Fatalf("overlapping run exit %d, want 75: %s", c, out)
	}
	_ = holder.Wait()
	if c := holder.ProcessState.ExitCode(); c != 1 {
		t.Fatalf("timed-out run exit %d, want 1\n%s", c, stderr.String())
	}
	var n int
	var status, msg string
	if err := db.QueryRow("SELECT COUNT(*), MAX(status), MAX(error) FROM job_runs").Scan(&n, &status, &msg); err != nil {
		t.Fatal(err)
	}
	if n != 1 || status != "cancelled" || !strings.Contains(msg, "timeout after 1.5s") {
		t.Fatalf("job_runs: %d rows, %s %q", n, status, msg)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A verb as the last argument (cronkit migrate status) must parse, not panic.
func TestVerbAsLastArgument(t *testing.T) {
	db := mysqltest.New(t)
	code, out, errOut := jobs(t, map[string]string{"CRONKIT_DB_DSN": db.DSN}, "migrate", "status")
	if code != 0 || !strings.Contains(out, "applied") {
		t.Fatalf("migrate status: %d %q %q", code, out, errOut)
	}
}
