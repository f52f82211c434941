package crontab

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // zones without the host's zoneinfo

	"github.com/robfig/cron/v3"
)

// parseErrors flattens a joined parse error into its *ParseError parts.
func parseErrors(t *testing.T, err error) []*ParseError {
	t.Helper()
	if err == nil {
		return nil
	}
	var errs []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	} else {
		errs = []error{err}
	}
	var out []*ParseError
	for _, e := range errs {
		var pe *ParseError
		if !errors.As(e, &pe) {
			t.Fatalf("error %v is not a *ParseError", e)
		}
		out = append(out, pe)
	}
	return out
}

func TestParseCrontabGoodLines(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		system   bool
		text     string
		wantLine int
		wantSpec string
		wantLoc  *time.Location
		wantUser string
		wantArgs []string
		wantJob  string
	}{
		{
			name: "cron.d line after env lines", system: true,
			text:     "SHELL=/bin/sh\nMAILTO=\"\"\n# comment\n\n5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m\n",
			wantLine: 5, wantSpec: "5 * * * *", wantLoc: time.UTC, wantUser: "cronkit",
			wantArgs: []string{"billing", "--timeout", "50m"}, wantJob: "billing",
		},
		{
			name: "user crontab has no user field",
			text: "*/15 * * * * /usr/bin/cronkit abuse --timeout 12m\n", wantLine: 1,
			wantSpec: "*/15 * * * *", wantLoc: time.UTC,
			wantArgs: []string{"abuse", "--timeout", "12m"}, wantJob: "abuse",
		},
		{
			name: "CRON_TZ sets the zone of later lines", system: true,
			text:     "CRON_TZ=Europe/Berlin\n30 2 * * * cronkit jobs reconcile --timeout 3h\n",
			wantLine: 2, wantSpec: "30 2 * * *", wantLoc: berlin, wantUser: "cronkit",
			wantArgs: []string{"reconcile", "--timeout", "3h"}, wantJob: "reconcile",
		},
		{
			name: "TZ with spaces and quotes", system: true,
			text:     "TZ = \"Europe/Berlin\"\n@hourly cronkit /usr/bin/cronkit drip --timeout 50m\n",
			wantLine: 2, wantSpec: "@hourly", wantLoc: berlin, wantUser: "cronkit",
			wantArgs: []string{"drip", "--timeout", "50m"}, wantJob: "drip",
		},
		{
			name: "@every takes its duration", system: true,
			text:     "@every 90m   cronkit   /usr/bin/cronkit billing rate --timeout=80m\n",
			wantLine: 1, wantSpec: "@every 90m", wantLoc: time.UTC, wantUser: "cronkit",
			wantArgs: []string{"billing", "rate", "--timeout=80m"}, wantJob: "billing rate",
		},
		{
			name: "a cronkit-<job> link runs its job", system: true,
			text:     "5 * * * * cronkit /usr/bin/cronkit-billing --timeout 50m\n",
			wantLine: 1, wantSpec: "5 * * * *", wantLoc: time.UTC, wantUser: "cronkit",
			wantArgs: []string{"billing", "--timeout", "50m"}, wantJob: "billing",
		},
		{
			name: "a link's remaining words follow its job",
			text: "*/15 * * * * cronkit-drip unsubscribe-server --listen 127.0.0.1:8025\n", wantLine: 1,
			wantSpec: "*/15 * * * *", wantLoc: time.UTC,
			wantArgs: []string{"drip", "unsubscribe-server", "--listen", "127.0.0.1:8025"}, wantJob: "drip unsubscribe-server",
		},
		{
			name: "quoted arguments keep their spaces", system: true,
			text:     "0 3 * * 1-5 cronkit /opt/bin/jobs abuse --reason 'weekly sweep' --note \"a \\\"b\\\"\"\n",
			wantLine: 1, wantSpec: "0 3 * * 1-5", wantLoc: time.UTC, wantUser: "cronkit",
			wantArgs: []string{"abuse", "--reason", "weekly sweep", "--note", `a "b"`}, wantJob: "abuse",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := ParseCrontab(strings.NewReader(tt.text), "test.cron", tt.system)
			if err != nil {
				t.Fatalf("ParseCrontab: %v", err)
			}
			if len(entries) != 1 {
				t.Fatalf("got %d entries, want 1", len(entries))
			}
			e := entries[0]
			wantFormat := FormatCrontab
			if tt.system {
				wantFormat = FormatCronD
			}
			if e.Source != "test.cron" || e.Line != tt.wantLine || e.Format != wantFormat {
				t.Errorf("at %s:%d %s, want test.cron:%d %s", e.Source, e.Line, e.Format, tt.wantLine, wantFormat)
			}
			if e.Spec != tt.wantSpec || e.Location.String() != tt.wantLoc.String() || e.User != tt.wantUser {
				t.Errorf("spec %q loc %s user %q, want %q %s %q", e.Spec, e.Location, e.User, tt.wantSpec, tt.wantLoc, tt.wantUser)
			}
			if !slices.Equal(e.Args, tt.wantArgs) {
				t.Errorf("args %q, want %q", e.Args, tt.wantArgs)
			}
			if e.Job() != tt.wantJob || e.Name != tt.wantJob {
				t.Errorf("job %q name %q, want %q", e.Job(), e.Name, tt.wantJob)
			}
			if e.Schedule == nil {
				t.Fatal("no schedule")
			}
			if s, ok := e.Schedule.(*cron.SpecSchedule); ok && s.Location.String() != tt.wantLoc.String() {
				t.Errorf("schedule location %s, want %s", s.Location, tt.wantLoc)
			}
			if e.ConcurrencyForbid {
				t.Error("cron lines do not forbid concurrency")
			}
		})
	}
}

func TestParseCrontabBadLines(t *testing.T) {
	tests := []struct {
		name     string
		system   bool
		text     string
		wantLine int
		wantMsg  string
	}{
		{"bad minute", true, "# c\n61 * * * * cronkit /usr/bin/cronkit billing\n", 2, "above maximum"},
		{"too few fields", true, "5 * * cronkit\n", 1, "schedule"},
		{"unknown descriptor", true, "\n\n@fortnightly cronkit /usr/bin/cronkit billing\n", 3, "unrecognized descriptor"},
		{"@reboot", true, "@reboot cronkit /usr/bin/cronkit billing\n", 1, "@reboot"},
		{"not the cronkit binary", true, "5 * * * * cronkit /usr/bin/curl http://x\n", 1, `"/usr/bin/curl" is not the cronkit binary`},
		{"missing user field", true, "5 * * * * /usr/bin/cronkit billing --timeout 50m\n", 1, "missing user field"},
		{"missing user, bare binary", true, "5 * * * * jobs billing\n", 1, "missing user field"},
		{"user field in a user crontab", false, "5 * * * * cronkit /usr/bin/cronkit billing\n", 1, `"cronkit" before the command looks like a cron.d user field`},
		{"no subcommand", true, "5 * * * * cronkit /usr/bin/cronkit\n", 1, "no subcommand"},
		{"a link without its job", true, "5 * * * * cronkit /usr/bin/cronkit- billing\n", 1, "not the cronkit binary"},
		{"shell redirection", true, "5 * * * * cronkit /usr/bin/cronkit billing >/dev/null 2>&1\n", 1, "shell syntax"},
		{"percent sign", true, "5 * * * * cronkit /usr/bin/cronkit billing --note 50%\n", 1, "newline"},
		{"variable in quotes", true, "5 * * * * cronkit /usr/bin/cronkit billing --note \"$HOME\"\n", 1, "shell expansion"},
		{"unterminated quote", true, "5 * * * * cronkit /usr/bin/cronkit billing 'x\n", 1, "unterminated"},
		{"unknown zone", true, "CRON_TZ=Mars/Olympus\n", 1, "Mars/Olympus"},
		{"garbage", true, "hello world\n", 1, "neither a schedule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := ParseCrontab(strings.NewReader(tt.text), "bad.cron", tt.system)
			if len(entries) != 0 {
				t.Errorf("got %d entries, want none", len(entries))
			}
			errs := parseErrors(t, err)
			if len(errs) != 1 {
				t.Fatalf("got errors %v, want one", err)
			}
			pe := errs[0]
			if pe.Source != "bad.cron" || pe.Line != tt.wantLine || !strings.Contains(pe.Error(), tt.wantMsg) {
				t.Errorf("error %q (line %d), want line %d containing %q", pe.Error(), pe.Line, tt.wantLine, tt.wantMsg)
			}
			if prefix := "bad.cron:" + strconv.Itoa(tt.wantLine) + ": "; !strings.HasPrefix(pe.Error(), prefix) {
				t.Errorf("error %q does not start with %q", pe.Error(), prefix)
			}
		})
	}
}

// A bad line does not hide the good ones around it, and every bad line is reported.
func TestParseCrontabKeepsGoingAfterErrors(t *testing.T) {
	text := strings.Join([]string{
		"5 * * * * cronkit /usr/bin/cronkit billing --timeout 50m",
		"5 * * * * /usr/bin/cronkit billing",
		"*/15 * * * * cronkit /usr/bin/cronkit abuse --timeout 12m",
		"99 * * * * cronkit /usr/bin/cronkit abuse",
	}, "\n")
	entries, err := ParseCrontab(strings.NewReader(text), "mixed.cron", true)
	if len(entries) != 2 || entries[0].Line != 1 || entries[1].Line != 3 {
		t.Errorf("entries %+v, want lines 1 and 3", entries)
	}
	var lines []int
	for _, pe := range parseErrors(t, err) {
		lines = append(lines, pe.Line)
	}
	if !slices.Equal(lines, []int{2, 4}) {
		t.Errorf("error lines %v, want [2 4]", lines)
	}
}
