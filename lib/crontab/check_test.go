package crontab

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/golden"
)

// fakeValidate stands in for the binary's validation: it knows the subcommands
// billing and abuse and parses their flags with a real flag set.
func fakeValidate(args []string) error {
	switch args[0] {
	case "billing", "abuse":
	default:
		return fmt.Errorf("unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Duration("timeout", 0, "")
	fs.String("metrics-file", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return nil
}

var checkNow = time.Date(2026, 1, 15, 10, 20, 0, 0, time.UTC)

func mustCrontab(t *testing.T, text string) []Entry {
	t.Helper()
	entries, err := ParseCrontab(strings.NewReader(text), "c.cron", true)
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func mustK8s(t *testing.T, schedule, zone, policy, args string) []Entry {
	t.Helper()
	y := fmt.Sprintf(`apiVersion: batch/v1
kind: CronJob
metadata: {name: cj}
spec:
  schedule: %q
  timeZone: %q
  concurrencyPolicy: %s
  jobTemplate: {spec: {template: {spec: {containers: [{name: jobs, command: [/usr/bin/cronkit], args: %s}]}}}}
`, schedule, zone, policy, args)
	entries, err := ParseKubernetes(strings.NewReader(y), "cj.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

func problemsOf(rep CheckReport) map[string][]string {
	out := map[string][]string{}
	for _, r := range rep.Results {
		out[fmt.Sprintf("%s:%d", r.Entry.Source, r.Entry.Line)] = r.Problems
	}
	return out
}

func TestCheckEntryProblems(t *testing.T) {
	tests := []struct {
		name    string
		entries []Entry
		want    []string // one substring per expected problem, of the single entry
	}{
		{"ok", mustCrontab(t, "5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m\n"), nil},
		{"unknown subcommand", mustCrontab(t, "5 * * * * cronkit /usr/bin/cronkit drip --timeout 50m\n"), []string{`unknown subcommand "drip"`}},
		{"unknown flag", mustCrontab(t, "5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m --fast\n"), []string{"flag provided but not defined"}},
		{"no timeout", mustCrontab(t, "5 * * * * cronkit /usr/bin/cronkit billing\n"), []string{"no --timeout"}},
		{"timeout as long as the interval", mustCrontab(t, "*/15 * * * * cronkit /usr/bin/cronkit abuse --timeout=15m\n"), []string{"--timeout 15m is not shorter than the 15m0s between runs"}},
		{"irregular schedule: shortest gap counts", mustCrontab(t, "0 9,10 * * * cronkit /usr/bin/cronkit abuse -timeout 2h\n"), []string{"not shorter than the 1h0m0s"}},
		{"never runs", mustCrontab(t, "0 0 30 2 * cronkit /usr/bin/cronkit billing --timeout 1h\n"), []string{"never runs"}},
		{"kubernetes without Forbid", mustK8s(t, "5 * * * *", "Etc/UTC", "Allow", "[billing, --timeout, 50m]"), []string{"concurrencyPolicy is not Forbid"}},
		{"kubernetes with Forbid", mustK8s(t, "5 * * * *", "Etc/UTC", "Forbid", "[billing, --timeout, 50m]"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Check(tt.entries, fakeValidate, checkNow, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Results) != 1 {
				t.Fatalf("got %d results, want 1", len(rep.Results))
			}
			got := rep.Results[0].Problems
			if len(got) != len(tt.want) {
				t.Fatalf("problems %q, want %d matching %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %q, want one containing %q", got[i], w)
				}
			}
			if (rep.Err() == nil) != (len(tt.want) == 0) || (rep.Err() != nil && !errors.Is(rep.Err(), ErrCheckFailed)) {
				t.Errorf("Err() = %v with %d problems", rep.Err(), len(got))
			}
		})
	}
}

func TestCheckConsistencyAcrossFormats(t *testing.T) {
	cronD := func(line string) []Entry { return mustCrontab(t, line+"\n") }
	tests := []struct {
		name     string
		entries  [][]Entry
		mismatch bool
	}{
		{"same spelling", [][]Entry{
			cronD("5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m"),
			mustK8s(t, "5 * * * *", "UTC", "Forbid", "[billing, --timeout, 50m]"),
		}, false},
		{"equivalent spellings and UTC aliases", [][]Entry{
			cronD("*/15 * * * * cronkit /usr/bin/cronkit abuse --timeout 12m"),
			mustK8s(t, "0,15,30,45 * * * *", "Etc/UTC", "Forbid", "[abuse, --timeout, 12m]"),
		}, false},
		{"@hourly is 0 * * * *", [][]Entry{
			cronD("@hourly cronkit /usr/bin/cronkit billing --timeout 50m"),
			mustK8s(t, "0 * * * *", "Etc/UTC", "Forbid", "[billing, --timeout, 50m]"),
		}, false},
		{"different minute", [][]Entry{
			cronD("5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m"),
			mustK8s(t, "10 * * * *", "Etc/UTC", "Forbid", "[billing, --timeout, 50m]"),
		}, true},
		{"different zone", [][]Entry{
			cronD("5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m"),
			mustK8s(t, "5 * * * *", "Europe/Berlin", "Forbid", "[billing, --timeout, 50m]"),
		}, true},
		{"other jobs are not compared", [][]Entry{
			cronD("5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m"),
			mustK8s(t, "*/15 * * * *", "Etc/UTC", "Forbid", "[abuse, --timeout, 12m]"),
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Check(slices.Concat(tt.entries...), fakeValidate, checkNow, 1)
			if err != nil {
				t.Fatal(err)
			}
			for where, problems := range problemsOf(rep) {
				found := slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, "scheduled differently across formats") })
				if found != tt.mismatch || len(problems) != map[bool]int{true: 1}[tt.mismatch] {
					t.Errorf("%s: problems %q, want mismatch=%v and nothing else", where, problems, tt.mismatch)
				}
			}
		})
	}
}

func TestCheckRejectsNegativeCount(t *testing.T) {
	if _, err := Check(nil, nil, checkNow, -1); err == nil {
		t.Error("Check with n=-1 returned no error")
	}
}

// robfig/cron in a zone with DST, shown at Europe/Berlin's 2026 transitions: 02:30
// does not exist on 29 March (clocks jump 02:00 -> 03:00) and that day's run is
// skipped; it exists twice on 25 October (03:00 -> 02:00) and runs twice. Vixie cron
// and cronie run such jobs once on both days: one more reason to schedule in UTC.
func TestCheckNextRunsAcrossDST(t *testing.T) {
	entries := mustCrontab(t, "CRON_TZ=Europe/Berlin\n30 2 * * * cronkit /usr/bin/cronkit billing --timeout 50m\n")
	tests := []struct {
		name string
		now  time.Time
		want []string
	}{
		{"spring forward: 29 March skipped", time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC), []string{
			"2026-03-28T02:30:00+01:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00",
		}},
		{"fall back: 25 October twice", time.Date(2026, 10, 24, 12, 0, 0, 0, time.UTC), []string{
			"2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-26T02:30:00+01:00",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Check(entries, fakeValidate, tt.now, 3)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rep.Results[0].Next {
				got = append(got, r.Format(time.RFC3339))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("next runs %v, want %v", got, tt.want)
			}
		})
	}
}

// The text report is pinned by a golden file (CRONKIT_UPDATE_GOLDEN=1 rewrites it).
func TestCheckReportWriteText(t *testing.T) {
	entries := slices.Concat(
		mustCrontab(t, "MAILTO=\"\"\nCRON_TZ=UTC\n5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m --metrics-file '/var/lib/a b.prom'\n*/15 * * * * cronkit /usr/bin/cronkit abuse\n"),
		mustK8s(t, "10 * * * *", "Etc/UTC", "Allow", "[billing, --timeout, 50m]"),
		mustK8s(t, "0-59/15 * * * *", "Etc/UTC", "Forbid", "[abuse, --timeout, 12m]"),
	)
	// Given out of order: the report sorts by source and line.
	slices.Reverse(entries)
	rep, err := Check(entries, fakeValidate, checkNow, 2)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	golden.Check(t, "check.golden", buf.Bytes())
}
