package crontab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The repository's own crontab/ files: every line parses, runs a known subcommand
// with known flags and a --timeout, the CronJobs are Forbid, every job is scheduled
// in every format, and the formats agree.
func TestLoadDirRepositoryFiles(t *testing.T) {
	dir := filepath.Join("..", "..", "crontab")
	entries, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir(%s): %v", dir, err)
	}
	formats := map[string][]string{} // job -> formats scheduling it
	for _, e := range entries {
		formats[e.Job()] = append(formats[e.Job()], e.Format)
		if _, ok := timeoutArg(e.Args); !ok {
			t.Errorf("%s:%d: %q has no --timeout", e.Source, e.Line, e.Args)
		}
		if e.Format == FormatKubernetes && !e.ConcurrencyForbid {
			t.Errorf("%s:%d: CronJob %s is not concurrencyPolicy Forbid", e.Source, e.Line, e.Name)
		}
		if e.Format != FormatKubernetes && e.User != "cronkit" {
			t.Errorf("%s:%d: runs as %q, want cronkit", e.Source, e.Line, e.User)
		}
	}
	want := []string{FormatCronD, FormatKubernetes, FormatSystemd}
	for _, job := range []string{"billing", "abuse"} {
		got := slices.Sorted(slices.Values(formats[job]))
		if !slices.Equal(got, want) {
			t.Errorf("job %s scheduled in %v, want once in each of %v", job, got, want)
		}
	}
	if len(formats) != 2 {
		t.Errorf("jobs scheduled: %v, want billing and abuse only", formats)
	}

	rep, err := Check(entries, fakeValidate, time.Date(2026, 1, 15, 10, 20, 0, 0, time.UTC), 3)
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
	for _, r := range rep.Results {
		var runs []string
		for _, n := range r.Next {
			runs = append(runs, n.Format(time.RFC3339))
		}
		want := map[string][]string{
			"billing": {"2026-01-15T11:05:00Z", "2026-01-15T12:05:00Z", "2026-01-15T13:05:00Z"},
			"abuse":   {"2026-01-15T10:30:00Z", "2026-01-15T10:45:00Z", "2026-01-15T11:00:00Z"},
		}[r.Entry.Job()]
		if !slices.Equal(runs, want) {
			t.Errorf("%s:%d: next runs %v, want %v", r.Entry.Source, r.Entry.Line, runs, want)
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
	write("a.cron", "5 * * * * cronkit /usr/local/bin/jobs billing --timeout 50m\n61 * * * * cronkit /usr/local/bin/jobs abuse\n")
	write("systemd/x.timer", "[Timer]\nOnCalendar=*-*-* *:05:30\n")
	write("systemd/x.service", "[Service]\nExecStart=/usr/local/bin/jobs billing\n")
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
