package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/mysql/mysqltest"
)

// One --now rule for every command that changes something: the future is a what-if,
// for dry runs only, and the message is the same whichever job refuses it.
func TestFutureNowRefusedOutsideDryRun(t *testing.T) {
	w := newAbuseWorld(t)
	env := w.env(w.db.DSN)
	env["CRONKIT_STRIPE_KEY"] = testStripeKey
	future := time.Now().UTC().AddDate(1, 0, 0).Format(time.RFC3339)
	want := "cronkit %s: --now " + future + " is in the future: only a dry run (--dry-run) may look ahead\n"
	for _, args := range [][]string{
		{"billing", "--now", future},
		{"billing", "rate", "--now", future},
		{"abuse", "--now", future},
		{"abuse", "approve", "1", "--reason", "typo in the date", "--now", future},
	} {
		code, out, errOut := jobs(t, env, args...)
		if code != 2 || out != "" || errOut != strings.Replace(want, "%s", args[0], 1) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and %q", args, code, out, errOut, want)
		}
	}
	if n := countRows(t, w.db.DB, "job_runs") + countRows(t, w.db.DB, "abuse_cases") + countRows(t, w.db.DB, "mail_outbox"); n != 0 {
		t.Fatalf("refused runs wrote %d rows", n)
	}
	// A date is midnight UTC; a past one runs for real, a future one is a dry run's.
	if code, _, errOut := jobs(t, env, "abuse", "--now", abuseDay(1).Format(time.DateOnly)); code != 0 {
		t.Fatalf("past date: exit %d %s", code, errOut)
	}
	for _, args := range [][]string{
		{"billing", "--dry-run", "--now", future},
		{"abuse", "--dry-run", "--now", future[:10]},
	} {
		if code, _, errOut := jobs(t, env, args...); code != 0 && code != 3 {
			t.Errorf("%v: exit %d, stderr %q; a dry run may look ahead", args, code, errOut)
		}
	}
}

// A dry run sends nothing, so it needs no sender address and no SMTP relay; the
// database and CloudStack settings are enough.
func TestAbuseDryRunNeedsOnlyDatabaseAndCloudStack(t *testing.T) {
	w := newAbuseWorld(t)
	env := map[string]string{}
	for _, k := range []string{"CRONKIT_DB_DSN", "CRONKIT_CLOUDSTACK_URL", "CRONKIT_CLOUDSTACK_API_KEY", "CRONKIT_CLOUDSTACK_SECRET_KEY"} {
		env[k] = w.env(w.db.DSN)[k]
	}
	code, out, errOut := jobs(t, env, "abuse", "--dry-run", "--now", abuseNow(21))
	if code != 3 && code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, errOut)
	}
	if !strings.Contains(out, "would") && !strings.Contains(out, "WOULD") {
		t.Fatalf("dry run printed no plan:\n%s", out)
	}
	if n := countRows(t, w.db.DB, "abuse_cases") + countRows(t, w.db.DB, "mail_outbox") + countRows(t, w.db.DB, "job_runs"); n != 0 {
		t.Fatalf("dry run wrote %d rows", n)
	}
	// The same settings on a real run name what is missing.
	code, _, errOut = jobs(t, env, "abuse", "--now", abuseNow(21))
	if code != 2 || !strings.Contains(errOut, "--mail-from (or CRONKIT_MAIL_FROM)") {
		t.Fatalf("real run without a sender: exit %d %q", code, errOut)
	}
}

// After an upgrade whose migrations have not run, every job says so and exits 2
// before doing anything, instead of failing on a missing column every hour.
func TestSchemaBehindExits2(t *testing.T) {
	db := mysqltest.New(t)
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_LOG_FORMAT": "json"}
	// The binary one migration ahead of its database: revert the newest one.
	if code, out, errOut := jobs(t, env, "migrate", "down"); code != 0 || !strings.HasPrefix(out, "down ") {
		t.Fatalf("migrate down: %d %q %q", code, out, errOut)
	}
	for _, args := range [][]string{{"noop"}, {"billing", "rate"}, {"history"}, {"billing", "show-invoice", "1"}} {
		code, out, errOut := jobs(t, env, args...)
		if code != 2 || out != "" || !strings.Contains(errOut, "this binary needs") || !strings.Contains(errOut, "run cronkit migrate") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 2 and the migration versions", args, code, out, errOut)
		}
	}
	if n := countRows(t, db.DB, "job_runs"); n != 0 {
		t.Fatalf("wrote %d job_runs rows", n)
	}
	if code, out, errOut := jobs(t, env, "migrate"); code != 0 || !strings.Contains(out, "up ") {
		t.Fatalf("migrate: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := jobs(t, env, "noop"); code != 0 {
		t.Fatalf("noop after migrate: %d %q", code, errOut)
	}
}

func TestClockRule(t *testing.T) {
	process := func() time.Time { return time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC) }
	for _, tc := range []struct {
		now    string
		dryRun bool
		want   string // RFC 3339, or the error's text
	}{
		{"", false, "2026-03-29T01:30:00Z"},
		{"2026-03-29T01:30:00Z", false, "2026-03-29T01:30:00Z"},
		{"2026-03-29T03:30:00+02:00", false, "2026-03-29T01:30:00Z"}, // CEST began at 01:00 UTC
		{"2026-03-28", false, "2026-03-28T00:00:00Z"},
		{"2026-03-29", false, "2026-03-29T00:00:00Z"},
		{"2026-03-30", false, "--now 2026-03-30 is in the future: only a dry run (--dry-run) may look ahead"},
		{"2026-03-29T01:30:01Z", false, "--now 2026-03-29T01:30:01Z is in the future: only a dry run (--dry-run) may look ahead"},
		{"2026-03-30", true, "2026-03-30T00:00:00Z"},
		{"2027-01-01T00:00:00Z", true, "2027-01-01T00:00:00Z"},
		{"29/03/2026", true, `--now "29/03/2026": want an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25)`},
		{"2026-03-29 01:00", false, `--now "2026-03-29 01:00": want an RFC 3339 time (2026-11-25T10:00:00Z) or a date (2026-11-25)`},
	} {
		g := clockFlags{now: tc.now}
		clock, err := g.clock(process, tc.dryRun)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = clock().Format(time.RFC3339)
		}
		if got != tc.want {
			t.Errorf("--now %q dry-run %v: got %q, want %q", tc.now, tc.dryRun, got, tc.want)
		}
	}
}

// Plain `cronkit reconcile` runs both checks, so it needs CloudStack as well as Stripe,
// and says which setting is missing.
func TestReconcileRunsTheUsageCheckToo(t *testing.T) {
	db := mysqltest.New(t)
	env := map[string]string{"CRONKIT_DB_DSN": db.DSN, "CRONKIT_STRIPE_KEY": testStripeKey}
	code, out, errOut := jobs(t, env, "reconcile")
	if code != 2 || out != "" || !strings.Contains(errOut, "the usage check reads CloudStack: no orchestrator: set --cloudstack-url") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if code, _, errOut := jobs(t, env, "reconcile", "usage", "--dry-run"); code != 2 || !strings.Contains(errOut, "--cloudstack-url") {
		t.Fatalf("usage without CloudStack: %d %q", code, errOut)
	}
}

// A provider rebrands abuse's notices without a rebuild: --templates lays a directory
// over the embedded templates, file by file; a template that does not parse is a
// configuration error naming the file.
func TestAbuseTemplatesOverride(t *testing.T) {
	w := newAbuseWorld(t)
	env := w.env(w.db.DSN)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "reminder.subject.tmpl"), []byte("Example Cloud: invoice {{.OldestInvoice}} is waiting"), 0o644); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "warning.txt.tmpl"), []byte("{{.Broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := jobs(t, env, "abuse", "--templates", bad, "--now", abuseNow(3)); code != 2 || !strings.Contains(errOut, "warning.txt.tmpl") {
		t.Fatalf("bad template: exit %d %q", code, errOut)
	}
	if code, _, errOut := jobs(t, env, "abuse", "--templates", dir, "--now", abuseNow(3)); code != 0 && code != 3 {
		t.Fatalf("run: exit %d %s", code, errOut)
	}
	subjects := map[string]bool{}
	for _, m := range w.sink.Messages() {
		subjects[m.Header.Get("Subject")] = true
	}
	if !subjects["Example Cloud: invoice 1001 is waiting"] {
		t.Fatalf("the rebranded reminder did not arrive: %v", subjects)
	}
}
