package crontab

import (
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

func TestCalendarToCron(t *testing.T) {
	tests := []struct {
		expr     string
		wantSpec string
		wantLoc  string
	}{
		{"*-*-* *:05:00", "5 * * * *", "UTC"},
		{"*-*-* *:05:00 UTC", "5 * * * *", "UTC"},
		{"*:0/15", "*/15 * * * *", "UTC"},
		{"*-*-* *:00/15:00 UTC", "*/15 * * * *", "UTC"},
		{"*:5/15", "5-59/15 * * * *", "UTC"},
		{"hourly", "0 * * * *", "UTC"},
		{"daily", "0 0 * * *", "UTC"},
		{"Daily Europe/Berlin", "0 0 * * *", "Europe/Berlin"},
		{"weekly", "0 0 * * 1", "UTC"},
		{"monthly", "0 0 1 * *", "UTC"},
		{"*-*-* 03:30:00", "30 3 * * *", "UTC"},
		{"03:30 Europe/Berlin", "30 3 * * *", "Europe/Berlin"},
		{"*-*-* 00,06,12,18:10:00", "10 0,6,12,18 * * *", "UTC"},
		{"*-*-* 08..17:00", "0 8-17 * * *", "UTC"},
		{"Mon..Fri 09:00", "0 9 * * 1-5", "UTC"},
		{"Sat,Sun *-*-* 12:00:00", "0 12 * * 0,6", "UTC"},
		{"Mon..Sun 12:00", "0 12 * * *", "UTC"},
		{"*-01,07-01 00:00:00", "0 0 1 1,7 *", "UTC"},
		{"*-*-01 04:00", "0 4 1 * *", "UTC"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			spec, loc, err := calendarToCron(tt.expr)
			if err != nil {
				t.Fatalf("calendarToCron: %v", err)
			}
			if spec != tt.wantSpec || loc.String() != tt.wantLoc {
				t.Errorf("got %q in %s, want %q in %s", spec, loc, tt.wantSpec, tt.wantLoc)
			}
			if _, err := parseSpec(spec, loc); err != nil {
				t.Errorf("converted spec does not parse: %v", err)
			}
		})
	}
}

func TestCalendarToCronRejects(t *testing.T) {
	tests := []struct{ expr, wantMsg string }{
		{"*-*-* *:05:30", "seconds"},
		{"2026-*-* 03:00", "year"},
		{"Mon *-*-01 03:00", "weekday and day of month"},
		{"*-02~03 00:00", "~"},
		{"Fri..Mon 03:00", "backwards"},
		{"Funday 03:00", "unknown weekday"},
		{"*-*-* 25:00", "out of range"},
		{"*-*-* 03:00 Mars/Olympus", "unsupported part"},
		{"fortnightly", "unknown weekday"},
		{"*-*-* 03:00/0", "repetition"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, _, err := calendarToCron(tt.expr)
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %v, want one containing %q", err, tt.wantMsg)
			}
		})
	}
}

const testService = `[Unit]
Description=test

[Service]
Type=oneshot
User=cronkit
ExecStart=/usr/bin/cronkit billing \
    --timeout 50m --note "a b" --pct 5%%
`

func TestParseSystemd(t *testing.T) {
	fsys := fstest.MapFS{
		"cronkit-billing.timer":   {Data: []byte("# c\n[Timer]\nOnCalendar=*-*-* *:05:00 UTC\nOnCalendar=\nOnCalendar=*-*-* *:10:00\nPersistent=true\n")},
		"cronkit-billing.service": {Data: []byte(testService)},
		"two.timer":               {Data: []byte("[Timer]\nOnCalendar=daily Europe/Berlin\nOnCalendar=Mon..Fri 12:00\nUnit=cronkit-billing.service\n")},
		"README":                  {Data: []byte("not a unit")},
	}
	entries, err := ParseSystemd(fsys, "units")
	if err != nil {
		t.Fatalf("ParseSystemd: %v", err)
	}
	type got struct {
		Source, Name, Spec, Loc string
		Line                    int
	}
	var gots []got
	for _, e := range entries {
		gots = append(gots, got{e.Source, e.Name, e.Spec, e.Location.String(), e.Line})
		if want := []string{"billing", "--timeout", "50m", "--note", "a b", "--pct", "5%"}; !slices.Equal(e.Args, want) {
			t.Errorf("%s args %q, want %q", e.Name, e.Args, want)
		}
		if e.User != "cronkit" || e.Format != FormatSystemd || !e.ConcurrencyForbid || e.Schedule == nil {
			t.Errorf("%s: user %q format %q forbid %v schedule %v", e.Name, e.User, e.Format, e.ConcurrencyForbid, e.Schedule)
		}
	}
	// The empty OnCalendar= resets the list, as systemd does.
	want := []got{
		{"units/cronkit-billing.timer", "cronkit-billing", "10 * * * *", "UTC", 5},
		{"units/two.timer", "two", "0 0 * * *", "Europe/Berlin", 2},
		{"units/two.timer", "two", "0 12 * * 1-5", "UTC", 3},
	}
	if !slices.Equal(gots, want) {
		t.Errorf("entries\n%+v\nwant\n%+v", gots, want)
	}
}

func TestParseSystemdErrors(t *testing.T) {
	svc := func(exec string) *fstest.MapFile {
		return &fstest.MapFile{Data: []byte("[Service]\nType=oneshot\n" + exec + "\n")}
	}
	timer := &fstest.MapFile{Data: []byte("[Timer]\nOnCalendar=hourly\n")}
	tests := []struct {
		name   string
		fsys   fstest.MapFS
		wantAt string
		want   string
	}{
		{"bad calendar", fstest.MapFS{"a.timer": {Data: []byte("[Timer]\n\nOnCalendar=*-*-* *:05:30\n")}, "a.service": svc("ExecStart=/usr/bin/cronkit billing")},
			"d/a.timer:3: ", "seconds"},
		{"monotonic timer", fstest.MapFS{"a.timer": {Data: []byte("[Timer]\nOnBootSec=5min\nOnCalendar=hourly\n")}, "a.service": svc("ExecStart=/usr/bin/cronkit billing")},
			"d/a.timer:2: ", "monotonic"},
		{"no OnCalendar", fstest.MapFS{"a.timer": {Data: []byte("[Timer]\nPersistent=true\n")}, "a.service": svc("ExecStart=/usr/bin/cronkit billing")},
			"d/a.timer: ", "no OnCalendar"},
		{"missing service", fstest.MapFS{"a.timer": timer},
			"d/a.service: ", "not exist"},
		{"not the cronkit binary", fstest.MapFS{"a.timer": timer, "a.service": svc("ExecStart=/bin/sh -c 'jobs billing'")},
			"d/a.service:3: ", "not the cronkit binary"},
		{"ignore-failure prefix", fstest.MapFS{"a.timer": timer, "a.service": svc("ExecStart=-/usr/bin/cronkit billing")},
			"d/a.service:3: ", "prefix"},
		{"env substitution", fstest.MapFS{"a.timer": timer, "a.service": svc("ExecStart=/usr/bin/cronkit billing --timeout ${T}")},
			"d/a.service:3: ", "substitution"},
		{"specifier", fstest.MapFS{"a.timer": timer, "a.service": svc("ExecStart=/usr/bin/cronkit billing --name %n")},
			"d/a.service:3: ", "specifiers"},
		{"two ExecStart", fstest.MapFS{"a.timer": timer, "a.service": svc("ExecStart=/usr/bin/cronkit billing\nExecStart=/usr/bin/cronkit abuse")},
			"d/a.service:4: ", "several ExecStart"},
		{"line outside a section", fstest.MapFS{"a.timer": {Data: []byte("OnCalendar=hourly\n")}},
			"d/a.timer:1: ", "Section"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			entries, err := ParseSystemd(tt.fsys, "d")
			if len(entries) != 0 {
				t.Errorf("got %d entries, want none", len(entries))
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantAt) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one starting %q containing %q", err, tt.wantAt, tt.want)
			}
		})
	}
}

// The converted spec runs when systemd would: checked against run times printed by
// `systemd-analyze calendar --iterations=3 --base-time='2026-01-15 10:20:00 UTC'`.
func TestCalendarNextRunsMatchSystemd(t *testing.T) {
	base := time.Date(2026, 1, 15, 10, 20, 0, 0, time.UTC)
	tests := []struct {
		expr string
		want []string
	}{
		{"*-*-* *:05:00 UTC", []string{"2026-01-15T11:05:00Z", "2026-01-15T12:05:00Z", "2026-01-15T13:05:00Z"}},
		{"*-*-* *:00/15:00 UTC", []string{"2026-01-15T10:30:00Z", "2026-01-15T10:45:00Z", "2026-01-15T11:00:00Z"}},
	}
	for _, tt := range tests {
		spec, loc, err := calendarToCron(tt.expr)
		if err != nil {
			t.Fatal(err)
		}
		sched, err := parseSpec(spec, loc)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range nextRuns(sched, base, 3, loc) {
			got = append(got, r.Format(time.RFC3339))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: runs %v, want %v", tt.expr, got, tt.want)
		}
	}
}
