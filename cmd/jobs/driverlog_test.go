package main

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// The MySQL connection is cut in the middle of a run: the driver's own messages
// ("unexpected EOF", "closing bad idle connection") must come out as the run's JSON
// log lines with its run id, not as bare "[mysql] ..." lines; and the run, whose
// lock's session died, exits 1.
func TestMySQLDriverMessagesAreTheRunsLogLines(t *testing.T) {
	db := mysqltest.New(t)
	bin := buildJobs(t)
	up := hostPort(db.DSN)
	link := newChaosNet().link(t, "mysql", up)
	dsn := strings.Replace(db.DSN, up, link.Addr(), 1)

	cmd := exec.Command(bin, "noop", "--hold", "1500ms", "--log-format", "json")
	cmd.Env = []string{"CRONKIT_DB_DSN=" + dsn}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return strings.Contains(stderr.String(), "run started") })
	link.down() // every open connection, the lock's included, is cut
	time.Sleep(300 * time.Millisecond)
	link.up(t)
	_ = cmd.Wait()
	out := stderr.String()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit %d, want 1 (the lock's session died)\n%s", code, out)
	}
	runID, driverLines := "", 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("stderr line is not the run's JSON log: %q\n%s", line, out)
		}
		id, _ := m["run_id"].(string)
		if id == "" || runID != "" && id != runID {
			t.Fatalf("line without the run's id: %q", line)
		}
		runID = id
		if msg, _ := m["message"].(string); strings.HasPrefix(msg, "mysql driver: ") && m["dependency"] == "mysql" {
			driverLines++
		}
	}
	if driverLines == 0 || !strings.Contains(out, "lock lost during the run") {
		t.Fatalf("want the driver's messages and the lost lock in the run's log:\n%s", out)
	}
}
