package crontab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The repository's own crontab/ files, checked by property so that adding a job (a
// cron line, a timer and service, a CronJob) needs no edit here: every line parses,
// runs as the cronkit user (cron.d, systemd) with a --timeout shorter than its
// interval, every CronJob is Forbid, every job scheduled anywhere is scheduled once in
// each of the three formats, and its next runs are the same instants in all three.
// That each command line is a real subcommand with real flags is checked by the
// binary's own `cronkit crontab check` (cmd/jobs), which knows the commands.
func TestLoadDirRepositoryFiles(t *testing.T) {
	dir := filepath.Join("..", "..", "crontab")
	entries, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir(%s): %v", dir, err)
	}
	formats := map[string][]string{} // job -> formats scheduling it
	for _, e := range entries {
		if e.Job() == "" {
			t.Errorf("%s:%d: runs no job", e.Source, e.Line)
			continue
		}
		formats[e.Job()] = append(formats[e.Job()], e.Format)
		if e.Format == FormatKubernetes && !e.ConcurrencyForbid {
			t.Errorf("%s:%d: CronJob %s is not concurrencyPolicy Forbid", e.Source, e.Line, e.Name)
		}
		if e.Format != FormatKubernetes && e.User != "cronkit" {
			t.Errorf("%s:%d: runs as %q, want cronkit", e.Source, e.Line, e.User)
		}
	}
	if len(formats) == 0 {
		t.Fatalf("no job scheduled in %s", dir)
	}
	want := []string{FormatCronD, FormatKubernetes, FormatSystemd}
	for job, got := range formats {
		if slices.Sort(got); !slices.Equal(got, want) {
			t.Errorf("job %q scheduled in %v, want once in each of %v", job, got, want)
		}
	}

	// Check finds a missing --timeout, one not shorter than the interval, and
	// schedules that differ between formats. The arguments are left to cmd/jobs.
	const n = 5
	now := time.Date(2026, 1, 15, 10, 20, 0, 0, time.UTC)
	rep, err := Check(entries, nil, now, n)
	if err != nil {
		t.Fatal(err)
	}
	if err := rep.Err(); err != nil {
		var b strings.Builder
		if werr := rep.WriteText(&b); werr != nil {
			t.Fatal(werr)
		}
		t.Fatalf("check: %v\n%s", err, b.String())
	}
	// And, said directly: the next runs, as instants, agree across formats.
	next := map[string][]time.Time{} // job -> the first format's next runs
	for _, r := range rep.Results {
		e := r.Entry
		if len(r.Next) != n {
			t.Errorf("%s:%d: %d next runs, want %d", e.Source, e.Line, len(r.Next), n)
			continue
		}
		for i, at := range r.Next {
			if !at.After(now) || (i > 0 && !at.After(r.Next[i-1])) {
				t.Errorf("%s:%d: next runs %v are not increasing after %s", e.Source, e.Line, r.Next, now)
				break
			}
		}
		first, seen := next[e.Job()]
		if !seen {
			next[e.Job()] = r.Next
			continue
		}
		if !slices.EqualFunc(first, r.Next, time.Time.Equal) {
			t.Errorf("%s:%d: job %q next runs %v, another format's %v", e.Source, e.Line, e.Job(), r.Next, first)
		}
	}
}

func TestLoadDirReportsEveryBrokenFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.cron", "5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m\n61 * * * * cronkit /usr/bin/cronkit abuse\n")
	write("systemd/x.timer", "[Timer]\nOnCalendar=*-*-* *:05:30\n")
	write("systemd/x.service", "[Service]\nExecStart=/usr/bin/cronkit billing\n")
	write("k8s/cj.yml", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\nspec:\n  schedule: \"@fortnightly\"\n")

	entries, err := LoadDir(dir)
	if len(entries) != 1 || entries[0].Line != 1 {
		t.Errorf("entries %+v, want the good line of a.cron", entries)
	}
	for _, want := range []string{
		filepath.Join(dir, "a.cron") + ":2: ",
		filepath.Join(dir, "systemd", "x.timer") + ":2: ",
		filepath.Join(dir, "k8s", "cj.yml") + ":5: ",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want one mentioning %q", err, want)
		}
	}
}

func TestLoadDirEmpty(t *testing.T) {
	if _, err := LoadDir(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no schedules") {
		t.Errorf("LoadDir(empty) error %v, want one saying there are no schedules", err)
	}
}
