package main

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
	"github.com/cronkit/cronkit/lib/run/runtest"
)

// consoleLogLine is a console log line as a terminal shows it, colours gone, from
// its first column.
var consoleLogLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ (DBG|INF|WRN|ERR) `)

// TestBillingCatchUpOnATerminal runs the built binary as an operator would, on a
// pseudo-terminal, catching up a month of hours: the bar is drawn below the log
// lines and never shares a line with one (at debug level, where 744 lines print while
// it is drawn), per-hour lines are not shown at INFO, the bar is gone before the
// report, and the report folds the 744 hours into one line.
func TestBillingCatchUpOnATerminal(t *testing.T) {
	db := mysqltest.New(t)
	bin := buildJobs(t)
	for _, q := range []string{
		`INSERT INTO accounts (id, email, currency, created_at) SELECT seq, CONCAT('a', seq, '@example.com'),
  IF(seq MOD 2 = 0, 'EUR', 'USD'), '2025-09-01' FROM seq_1_to_6`,
		`INSERT INTO prices (product, currency, unit_price, valid_from) VALUES
  ('instance.small', 'USD', 0.0125, '2025-01-01'), ('instance.small', 'EUR', 0.0115, '2025-01-01'),
  ('volume.gb', 'USD', 0.0001, '2025-01-01'), ('volume.gb', 'EUR', 0.00009, '2025-01-01')`,
		// Every hour of October 2025 (744), two products per account.
		`INSERT INTO usage_records (account_id, resource_id, product, hour, quantity)
SELECT a.id, CONCAT('vm-', a.id), 'instance.small', '2025-10-01' + INTERVAL s.seq HOUR, 1 FROM accounts a JOIN seq_0_to_743 s
UNION ALL SELECT a.id, CONCAT('vol-', a.id), 'volume.gb', '2025-10-01' + INTERVAL s.seq HOUR, (s.seq MOD 2) * 100
FROM accounts a JOIN seq_0_to_743 s`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	env := []string{"CRONKIT_DB_DSN=" + db.DSN, "TERM=xterm"}

	// A dry run at debug level first: its 744 per-hour lines print while the bar is
	// drawn, so this is where a line could land on the bar.
	lines, report := onTerminal(t, bin, env, "billing", "rate", "--dry-run", "--log-level", "debug", "--now", "2025-11-01T00:20:00Z")
	if n := countMatching(lines[:report], "DBG hour planned"); n != 744 {
		t.Errorf("%d per-hour debug lines on the screen, want 744", n)
	}

	// The real run at the default level: a bar, the lines that matter, a short report.
	lines, report = onTerminal(t, bin, env, "billing", "rate", "--now", "2025-11-01T00:20:00Z")
	text := strings.Join(lines, "\n")
	if strings.Contains(text, "hour rated") {
		t.Errorf("per-hour lines shown at INFO")
	}
	for _, want := range []string{"INF run started", "INF rating caught up", "INF run finished"} {
		if !strings.Contains(text, want) {
			t.Errorf("the screen lacks %q", want)
		}
	}
	// 744 hours x 6 accounts x 2 products. USD: 3 accounts x (744 x 0.0125 + 372 x 100 x
	// 0.0001) = 39.06; EUR: 3 x (744 x 0.0115 + 372 x 100 x 0.00009) = 35.712.
	folded := "rate hour 2025-10-01T00:00Z .. 2025-10-31T23:00Z (744) 8928 charges, EUR 35.712000, USD 39.060000"
	if !strings.Contains(squash(strings.Join(lines[report:], "\n")), folded) {
		t.Errorf("report lacks the folded line %q", folded)
	}
	if n := len(lines) - report; n > 15 {
		t.Errorf("the report takes %d lines", n)
	}
	if t.Failed() {
		t.Logf("screen:\n%s", text)
	}
}

// onTerminal runs the binary with a pseudo-terminal as stdin, stdout and stderr, and
// returns the lines the terminal shows afterwards and the index of the report's first
// line. It fails the test unless a bar was drawn, every line before the report is a
// log line from its first column (a line glued onto the bar is not), and no bar is
// left on the screen.
func onTerminal(t *testing.T, bin string, env []string, args ...string) ([]string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 160})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var raw bytes.Buffer
	var screen runtest.Screen
	read := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.MultiWriter(&raw, &screen), tty)
		read <- err
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-time.After(3 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("jobs %v did not finish in 3 minutes", args)
	}
	if err != nil {
		t.Errorf("jobs %v: %v", args, err)
	}
	// Linux answers EIO on the terminal's side once the child has gone.
	if err := <-read; err != nil && !errors.Is(err, syscall.EIO) && !errors.Is(err, os.ErrClosed) {
		t.Fatalf("read terminal: %v", err)
	}

	lines := screen.Lines()
	report := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "billing ") && (strings.HasSuffix(l, " run") || strings.HasSuffix(l, "(nothing was changed)")) {
			report = i
			break
		}
	}
	failed := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
		t.Logf("screen:\n%s", strings.Join(lines, "\n"))
	}
	if n := strings.Count(raw.String(), "rating hours"); n < 2 {
		failed("jobs %v: the bar was drawn %d times: the test proves nothing", args, n)
	}
	if len(screen.Unknown) != 0 {
		failed("jobs %v: escapes the test cannot judge: %q", args, screen.Unknown)
	}
	if report < 0 {
		failed("jobs %v: no report on the screen", args)
		t.FailNow()
	}
	for _, l := range lines[:report] {
		if !consoleLogLine.MatchString(l) {
			failed("jobs %v: not a log line from its first column: %q", args, l)
			break
		}
	}
	if strings.Contains(strings.Join(lines, "\n"), "rating hours") {
		failed("jobs %v: a bar is left on the screen", args)
	}
	return lines, report
}

func countMatching(lines []string, s string) int {
	n := 0
	for _, l := range lines {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}
