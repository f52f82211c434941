package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cronkit/cronkit/lib/orchestrator"
)

var day = time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC)

func at(h, m int) time.Time {
	return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
}

func stateName(s state) string {
	var parts []string
	for _, p := range []struct {
		s    state
		name string
	}{{stAbsent, "absent"}, {stAllocated, "allocated"}, {stRunning, "running"}, {stRemoved, "removed"}} {
		if s&p.s != 0 {
			parts = append(parts, p.name)
		}
	}
	return strings.Join(parts, "|")
}

func render(tl []segment) []string {
	var out []string
	for _, s := range tl {
		name := stateName(s.states)
		if s.conflict {
			name = "CONFLICT"
		}
		out = append(out, fmt.Sprintf("%s-%s %s", s.from.Format("15:04"), s.to.Format("15:04"), name))
	}
	return out
}

func TestTimeline(t *testing.T) {
	ev := func(h, m int, typ string) timedEvent { return timedEvent{at: at(h, m), typ: typ} }
	from, to := day, day.Add(24*time.Hour-time.Minute) // 23:59, so every label is on the day
	for _, tc := range []struct {
		name    string
		kind    resourceKind
		listed  bool
		state   string
		created time.Time
		events  []timedEvent
		want    []string
	}{
		{"a VM running all along", kindVM, true, "Running", day.Add(-48 * time.Hour), nil,
			[]string{"00:00-23:59 running"}},
		{"a VM's day: created, stopped, started, destroyed and expunged", kindVM, false, "", time.Time{},
			[]timedEvent{ev(15, 0, orchestrator.EventVMExpunge), ev(10, 0, orchestrator.EventVMCreate), ev(12, 30, orchestrator.EventVMStop),
				ev(13, 0, orchestrator.EventVMStart), ev(15, 0, orchestrator.EventVMDestroy)},
			[]string{"00:00-10:00 absent", "10:00-12:30 running", "12:30-13:00 allocated", "13:00-15:00 running", "15:00-23:59 removed"}},
		{"a creation the log lacks is the inventory's", kindVM, true, "Stopped", at(9, 0),
			[]timedEvent{ev(11, 0, orchestrator.EventVMStart), ev(12, 0, orchestrator.EventVMStop)},
			[]string{"00:00-09:00 absent", "09:00-11:00 allocated", "11:00-12:00 running", "12:00-23:59 allocated"}},
		{"created and never started or stopped: the inventory says which", kindVM, true, "Stopped", at(9, 0),
			[]timedEvent{ev(9, 0, orchestrator.EventVMCreate)},
			[]string{"00:00-09:00 absent", "09:00-23:59 allocated"}},
		{"created, then destroyed: running or not is unknown", kindVM, true, "Destroyed", at(9, 0),
			[]timedEvent{ev(9, 0, orchestrator.EventVMCreate), ev(14, 0, orchestrator.EventVMDestroy)},
			[]string{"00:00-09:00 absent", "09:00-14:00 allocated|running", "14:00-23:59 removed"}},
		{"a start the inventory contradicts (a stop the log lacks)", kindVM, true, "Stopped", day.Add(-24 * time.Hour),
			[]timedEvent{ev(10, 0, orchestrator.EventVMStart)},
			[]string{"00:00-10:00 allocated", "10:00-23:59 CONFLICT"}},
		{"an event of another kind is not this resource's", kindVM, true, "Running", day.Add(-24 * time.Hour),
			[]timedEvent{ev(10, 0, orchestrator.EventVolumeDelete)},
			[]string{"00:00-23:59 running"}},
		{"a volume created and deleted", kindVolume, false, "", time.Time{},
			[]timedEvent{ev(9, 0, orchestrator.EventVolumeCreate), ev(14, 0, orchestrator.EventVolumeDelete)},
			[]string{"00:00-09:00 absent", "09:00-14:00 allocated", "14:00-23:59 removed"}},
		{"an address released and assigned again", kindIP, true, "Allocated", at(18, 0),
			[]timedEvent{ev(16, 0, orchestrator.EventIPRelease), ev(18, 0, orchestrator.EventIPAssign)},
			[]string{"00:00-16:00 allocated", "16:00-18:00 removed", "18:00-23:59 allocated"}},
		{"an address gone from the inventory with no event", kindIP, false, "", time.Time{}, nil,
			[]string{"00:00-23:59 absent|removed"}},
		{"a destroyed VM still listed, destroyed before the window", kindVM, true, "Destroyed", day.Add(-72 * time.Hour), nil,
			[]string{"00:00-23:59 removed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := render(timeline(tc.kind, tc.listed, tc.state, tc.created, tc.events, from, to))
			if !slices.Equal(got, tc.want) {
				t.Errorf("timeline:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestHourAccounting(t *testing.T) {
	tl := timeline(kindVM, false, "", time.Time{}, []timedEvent{
		{at(10, 20), orchestrator.EventVMCreate}, {at(12, 30), orchestrator.EventVMStop},
		{at(13, 0), orchestrator.EventVMDestroy}}, day, day.Add(24*time.Hour))
	for _, tc := range []struct {
		name     string
		from, to time.Time
		keep     func(segment) bool
		want     int64
	}{
		{"running in 10:00", at(10, 0), at(11, 0), knownIn(stRunning), 40 * 60},
		{"running in 11:00", at(11, 0), at(12, 0), knownIn(stRunning), 3600},
		{"running in 12:00", at(12, 0), at(13, 0), knownIn(stRunning), 30 * 60},
		{"may be allocated in 12:00", at(12, 0), at(13, 0), mayBe(stAllocated | stRunning), 3600},
		{"removed in 13:00", at(13, 0), at(14, 0), knownIn(stRemoved), 3600},
		{"may run in the day", day, day.Add(24 * time.Hour), mayBe(aliveFor(orchestrator.UsageRunningVM)), 2*3600 + 10*60},
	} {
		if got := seconds(tl, tc.from, tc.to, tc.keep); got != tc.want {
			t.Errorf("%s: %d s, want %d", tc.name, got, tc.want)
		}
	}
	if got := removedAt(tl); !got.Equal(at(13, 0)) {
		t.Errorf("removedAt = %v, want 13:00", got)
	}
	// A conflict may be anything but is never surely anything.
	c := []segment{{from: at(0, 0), to: at(1, 0), states: stAny, conflict: true}}
	if seconds(c, at(0, 0), at(1, 0), knownIn(stAny)) != 0 || seconds(c, at(0, 0), at(1, 0), mayBe(stRunning)) != 3600 {
		t.Error("a conflict must count as possible and never as known")
	}
}

func TestMicroHours(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"1", 1_000_000, true}, {"24", 24_000_000, true}, {"0.666667", 666_667, true}, {"0.5", 500_000, true},
		{".25", 250_000, true}, {" 2 ", 2_000_000, true}, {"0.0000005", 1, true}, {"0.0000004", 0, true},
		{"1.23456789", 1_234_568, true},
		{"", 0, false}, {"-1", 0, false}, {"+1", 0, false}, {"1e3", 0, false}, {"1.2.3", 0, false}, {"abc", 0, false},
		{"1.00000x", 0, false},
	} {
		got, ok := microHours(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("microHours(%q) = %d, %t; want %d, %t", tc.in, got, ok, tc.want, tc.ok)
		}
	}
	for v, want := range map[int64]string{1_000_000: "1", 666_667: "0.666667", 500_000: "0.5", 24_500_000: "24.5", 0: "0", 1: "0.000001"} {
		if got := formatMicroHours(v); got != want {
			t.Errorf("formatMicroHours(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestExcess(t *testing.T) {
	hour := func(h int) span { return span{at(h, 0), at(h+1, 0)} }
	daily := span{day, day.Add(24 * time.Hour)}
	for _, tc := range []struct {
		name   string
		spans  []span
		hours  []int64
		groups string
	}{
		{"an hour of an hour", []span{hour(3)}, []int64{1_000_000}, ""},
		{"an hour and a half in an hour", []span{hour(3)}, []int64{1_500_000}, "[0]=1.5/1"},
		{"a daily record of 24", []span{daily}, []int64{24_000_000}, ""},
		{"a daily record of 25", []span{daily}, []int64{25_000_000}, "[0]=25/24"},
		{"an hourly record inside a daily one", []span{daily, hour(5)}, []int64{24_000_000, 1_000_000}, "[0 1]=25/24"},
		{"adjacent hours are separate", []span{hour(4), hour(3)}, []int64{1_000_000, 1_000_000}, ""},
		{"two halves of one hour", []span{hour(2), hour(2)}, []int64{500_000, 500_000}, ""},
		{"rounding of a millionth each is allowed", []span{hour(2), hour(2)}, []int64{500_001, 500_001}, ""},
		{"two full copies of one hour", []span{hour(2), hour(6), hour(2)}, []int64{1_000_000, 1_000_000, 1_000_000}, "[0 2]=2/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			groups, carried, spanned := excess(tc.spans, tc.hours)
			var got []string
			for i, g := range groups {
				got = append(got, fmt.Sprintf("%v=%s/%s", g, formatMicroHours(carried[i]), formatMicroHours(spanned[i])))
			}
			if strings.Join(got, " ") != tc.groups {
				t.Errorf("excess = %q, want %q", strings.Join(got, " "), tc.groups)
			}
		})
	}
}

func TestRangesAndWindow(t *testing.T) {
	got := ranges([]time.Time{at(1, 0), at(2, 0), at(3, 0), at(7, 0)})
	var s []string
	for _, r := range got {
		s = append(s, r.String())
	}
	if want := "2025-03-02T01:00Z..2025-03-02T04:00Z 2025-03-02T07:00Z..2025-03-02T08:00Z"; strings.Join(s, " ") != want {
		t.Errorf("ranges = %q, want %q", s, want)
	}
	from, to := PreviousDay(time.Date(2025, 3, 3, 2, 30, 0, 0, time.FixedZone("x", 3600)))
	if !from.Equal(time.Date(2025, 3, 2, 0, 0, 0, 0, time.UTC)) || !to.Equal(time.Date(2025, 3, 3, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("PreviousDay = %v .. %v", from, to)
	}
}

func TestFingerprintIsClassAndIdsOnly(t *testing.T) {
	a := fingerprint(ClassRunningNotMetered, "vm-1")
	if a != fingerprint(ClassRunningNotMetered, "vm-1") || len(a) != 64 {
		t.Errorf("fingerprint not stable: %q", a)
	}
	for _, other := range []string{fingerprint(ClassMeteredNotFound, "vm-1"), fingerprint(ClassRunningNotMetered, "vm-2"),
		fingerprint(ClassAccountMismatch, "vm-1", "a", "b"), fingerprint(ClassAccountMismatch, "vm-1a", "b")} {
		if other == a {
			t.Errorf("%q collides", other)
		}
	}
	if fingerprint(ClassAccountMismatch, "vm-1", "a", "b") == fingerprint(ClassAccountMismatch, "vm-1", "ab") {
		t.Error("ids must be separated in the hash")
	}
}

// TestFileStageSortsAndDedupes: rows added in any order, some twice (an inventory
// paged while it changed, an event log read again), come back in the staging
// table's key order, once each, whether they fit in memory or spill to runs.
func TestFileStageSortsAndDedupes(t *testing.T) {
	in := []stagedRow{
		{resource: "vm-b", kind: kindVM, what: "Running", cs: "a"},
		{resource: "vm-a", kind: kindVM, event: true, at: 200, ord: 2, eventID: "e2", what: orchestrator.EventVMStop},
		{resource: "vol-a", kind: kindVolume, what: "Ready", cs: "a"},
		{resource: "vm-a", kind: kindVM, event: true, at: 100, ord: 0, eventID: "e1", what: orchestrator.EventVMCreate},
		{resource: "vm-a", kind: kindVM, what: "Stopped", cs: "a"},
		{resource: "vm-b", kind: kindVM, what: "Running", cs: "a"},
		{resource: "vm-a", kind: kindVM, event: true, at: 200, ord: 1, eventID: "e3", what: orchestrator.EventVMStart},
		{resource: "vm-a", kind: kindVM, event: true, at: 200, ord: 2, eventID: "e2", what: orchestrator.EventVMStop},
		{resource: "ip-z", kind: kindIP, what: "Allocated", cs: "b"},
	}
	want := []string{
		"ip-z ip inventory Allocated b",
		"vm-a vm inventory Stopped a",
		"vm-a vm 1970-01-01T00:01:40Z VM.CREATE ",
		"vm-a vm 1970-01-01T00:03:20Z VM.START ",
		"vm-a vm 1970-01-01T00:03:20Z VM.STOP ",
		"vm-b vm inventory Running a",
		"vol-a volume inventory Ready a",
	}
	for _, runRows := range []int{100, 2, 1} {
		t.Run(fmt.Sprintf("runs of %d", runRows), func(t *testing.T) {
			ctx := context.Background()
			f := &fileStage{dir: t.TempDir(), runRows: runRows}
			defer f.close()
			for _, r := range in {
				if err := f.add(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.finish(ctx); err != nil {
				t.Fatal(err)
			}
			if runRows < len(in) && len(f.files) == 0 {
				t.Fatal("no run was written to disk")
			}
			src, err := f.source(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for {
				res, ok := src.peek()
				if !ok {
					break
				}
				r := src.take()
				when := "inventory"
				if r.event {
					when = r.at.Format(time.RFC3339)
				}
				got = append(got, strings.Join([]string{res, r.kind.String(), when, r.what, r.cs}, " "))
			}
			if err := src.err(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
