package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

func TestCrontabCheckValidatesCommandLines(t *testing.T) {
	dir := t.TempDir()
	good := "CRON_TZ=UTC\n*/5 * * * * cronkit /usr/bin/cronkit noop --timeout 1m\n"
	if err := os.WriteFile(filepath.Join(dir, "ok.cron"), []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := jobs(t, nil, "crontab", "check", "--dir", dir, "--now", "2026-11-25T10:02:00Z", "--next", "2")
	if code != 0 {
		t.Fatalf("good crontab: %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"noop --timeout 1m", "2026-11-25T10:05:00Z", "2026-11-25T10:10:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	bad := "CRON_TZ=UTC\n*/5 * * * * cronkit /usr/bin/cronkit noop --timeout 1m --no-such-flag\n" +
		"0 * * * * cronkit /usr/bin/cronkit nosuchjob --timeout 1m\n"
	if err := os.WriteFile(filepath.Join(dir, "ok.cron"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = jobs(t, nil, "crontab", "check", "--dir", dir)
	if code != 1 || !strings.Contains(out, "no-such-flag") || !strings.Contains(out, `unknown subcommand "nosuchjob"`) {
		t.Fatalf("bad crontab: code %d\n%s", code, out)
	}
	if code, _, _ := jobs(t, nil, "crontab"); code != 2 {
		t.Fatalf("crontab without check: %d", code)
	}
}

// The repository's own schedules must pass the binary's own check.
func TestRepositoryCrontabIsValid(t *testing.T) {
	code, out, errOut := jobs(t, nil, "crontab", "check", "--dir", "../../crontab")
	if code != 0 {
		t.Fatalf("crontab/ check failed: %d\n%s\n%s", code, out, errOut)
	}
}

func TestScheduleRunsChildrenWithoutOverlapAndStopsOnSIGTERM(t *testing.T) {
	db := mysqltest.New(t)
	bin := buildJobs(t)
	tab := filepath.Join(t.TempDir(), "crontab")
	// Every second, a run that holds its lock for 4 s: later ticks must be skipped by the
	// scheduler itself (one child at a time), not by the lock.
	line := "@every 1s " + bin + " noop --hold 4s --timeout 30s\n"
	if err := os.WriteFile(tab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "schedule", "--crontab", tab, "--log-format", "json")
	cmd.Env = []string{"CRONKIT_DB_DSN=" + db.DSN}
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), `"message":"run started"`) })
	time.Sleep(2500 * time.Millisecond) // at least two more ticks, while the first child runs
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if c := cmd.ProcessState.ExitCode(); c != 130 {
		t.Fatalf("scheduler exit %d, want 130\n%s", c, out.String())
	}
	var n int
	var status string
	if err := db.QueryRow("SELECT COUNT(*), MAX(status) FROM job_runs").Scan(&n, &status); err != nil {
		t.Fatal(err)
	}
	if n != 1 || status != "cancelled" {
		t.Fatalf("job_runs: %d rows, status %s (want one child, cancelled by the forwarded SIGTERM)\n%s", n, status, out.String())
	}
	if strings.Count(out.String(), `"message":"run started"`) != 1 {
		t.Fatalf("more than one child started:\n%s", out.String())
	}
}
