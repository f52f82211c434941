package drip

import (
	"strings"
	"testing"
	"time"
)

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

func zone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

// funnelWith is the default funnel with the send rules changed.
func funnelWith(t *testing.T, window string, weekdays []string, cap int) *Funnel {
	t.Helper()
	f := DefaultFunnel()
	if err := f.SendWindow.UnmarshalText([]byte(window)); err != nil {
		t.Fatal(err)
	}
	f.Weekdays, f.DailyCap = weekdays, cap
	if err := f.validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

var (
	everyDay = []string{"mon", "tue", "wed", "thu", "fri", "sat", "sun"}
	workDays = []string{"mon", "tue", "wed", "thu", "fri"}
)

// Dates of 2026: Monday 9 March. Paris springs forward on Sunday 29 March at 02:00
// CET (01:00Z) and falls back on Sunday 25 October at 03:00 CEST (01:00Z); New York
// on Sunday 8 March at 02:00 EST (07:00Z) and Sunday 1 November at 02:00 EDT (06:00Z);
// Sydney falls back on Sunday 5 April at 03:00 AEDT (16:00Z on the 4th) and springs
// forward on Sunday 4 October at 02:00 AEST (16:00Z on the 3rd). Kiritimati is UTC+14
// and Kathmandu UTC+05:45, all year.
func TestSendTime(t *testing.T) {
	day := funnelWith(t, "09:00-18:00", everyDay, 1)
	for _, tc := range []struct {
		name      string
		f         *Funnel
		zone      string
		t         string
		marketing []string
		want      string // UTC
		wantLocal string // the recipient's clock, for the reader
	}{
		{name: "inside the window: now", zone: "UTC", t: "2026-03-10T10:00:00Z", want: "2026-03-10T10:00:00Z"},
		{name: "last second of the window", zone: "UTC", t: "2026-03-10T17:59:59Z", want: "2026-03-10T17:59:59Z"},
		{name: "closing time: next morning", zone: "UTC", t: "2026-03-10T18:00:00Z", want: "2026-03-11T09:00:00Z"},
		{name: "3 am in Paris waits for 09:00", zone: "Europe/Paris", t: "2026-03-10T02:00:00Z", want: "2026-03-10T08:00:00Z", wantLocal: "09:00 CET"},
		{name: "Paris evening: 18:30 is after hours", zone: "Europe/Paris", t: "2026-03-10T17:30:00Z", want: "2026-03-11T08:00:00Z"},
		{name: "Paris spring-forward night: 09:00 CEST, 23h after 09:00 CET the day before",
			zone: "Europe/Paris", t: "2026-03-29T00:30:00Z", want: "2026-03-29T07:00:00Z", wantLocal: "09:00 CEST"},
		{name: "Paris fall-back night: 09:00 CET", zone: "Europe/Paris", t: "2026-10-25T00:30:00Z", want: "2026-10-25T08:00:00Z", wantLocal: "09:00 CET"},
		{name: "New York evening before spring forward: Sunday 09:00 EDT",
			zone: "America/New_York", t: "2026-03-08T01:00:00Z", want: "2026-03-08T13:00:00Z", wantLocal: "09:00 EDT"},
		{name: "an opening the jump skips opens at the jump", f: funnelWith(t, "02:30-18:00", everyDay, 1),
			zone: "America/New_York", t: "2026-03-08T06:00:00Z", want: "2026-03-08T07:00:00Z", wantLocal: "03:00 EDT"},
		{name: "an opening that exists twice opens at the first", f: funnelWith(t, "01:30-18:00", everyDay, 1),
			zone: "America/New_York", t: "2026-11-01T04:00:00Z", want: "2026-11-01T05:30:00Z", wantLocal: "01:30 EDT"},
		{name: "wall clock: 01:10 the second time round is before 01:30 again", f: funnelWith(t, "01:30-18:00", everyDay, 1),
			zone: "America/New_York", t: "2026-11-01T06:10:00Z", want: "2026-11-01T06:30:00Z", wantLocal: "01:30 EST"},
		{name: "an opening at the fall-back hour, caught between the two passes: inside", f: funnelWith(t, "01:30-18:00", everyDay, 1),
			zone: "America/New_York", t: "2026-11-01T05:45:00Z", want: "2026-11-01T05:45:00Z", wantLocal: "01:45 EDT"},
		{name: "Sydney spring forward, skipped opening", f: funnelWith(t, "02:30-18:00", everyDay, 1),
			zone: "Australia/Sydney", t: "2026-10-03T15:00:00Z", want: "2026-10-03T16:00:00Z", wantLocal: "03:00 AEDT"},
		{name: "Sydney spring forward: 09:00 AEDT", zone: "Australia/Sydney", t: "2026-10-03T20:00:00Z", want: "2026-10-03T22:00:00Z", wantLocal: "09:00 AEDT"},
		{name: "Sydney fall back: 09:00 AEST", zone: "Australia/Sydney", t: "2026-04-04T20:00:00Z", want: "2026-04-04T23:00:00Z", wantLocal: "09:00 AEST"},
		{name: "Kathmandu's quarter hour", zone: "Asia/Kathmandu", t: "2026-03-10T03:00:00Z", want: "2026-03-10T03:15:00Z", wantLocal: "09:00 +0545"},
		{name: "Kiritimati: Saturday in UTC is Sunday there, Monday opens on UTC's Sunday", f: funnelWith(t, "09:00-18:00", workDays, 1),
			zone: "Pacific/Kiritimati", t: "2026-03-07T20:00:00Z", want: "2026-03-08T19:00:00Z", wantLocal: "Mon 09:00 +14"},
		{name: "Kiritimati: Friday evening in UTC is already Saturday there", f: funnelWith(t, "09:00-18:00", workDays, 1),
			zone: "Pacific/Kiritimati", t: "2026-03-13T20:00:00Z", want: "2026-03-15T19:00:00Z", wantLocal: "Mon 09:00 +14"},
		{name: "weekdays: Friday after hours waits for Monday", f: funnelWith(t, "09:00-18:00", workDays, 1),
			zone: "UTC", t: "2026-03-13T18:30:00Z", want: "2026-03-16T09:00:00Z"},
		{name: "weekdays: Sunday at noon waits for Monday", f: funnelWith(t, "09:00-18:00", workDays, 1),
			zone: "UTC", t: "2026-03-15T12:00:00Z", want: "2026-03-16T09:00:00Z"},
		{name: "cap: one sent this morning, next day", zone: "UTC", t: "2026-03-10T12:00:00Z",
			marketing: []string{"2026-03-10T09:05:00Z"}, want: "2026-03-11T09:00:00Z"},
		{name: "cap 2: room for one more", f: funnelWith(t, "09:00-18:00", everyDay, 2), zone: "UTC", t: "2026-03-10T12:00:00Z",
			marketing: []string{"2026-03-10T09:05:00Z"}, want: "2026-03-10T12:00:00Z"},
		{name: "cap 2: full", f: funnelWith(t, "09:00-18:00", everyDay, 2), zone: "UTC", t: "2026-03-10T12:00:00Z",
			marketing: []string{"2026-03-10T09:05:00Z", "2026-03-10T11:00:00Z"}, want: "2026-03-11T09:00:00Z"},
		{name: "cap counts a queued message of another campaign", zone: "UTC", t: "2026-03-11T07:00:00Z",
			marketing: []string{"2026-03-11T09:00:00Z"}, want: "2026-03-12T09:00:00Z"},
		{name: "cap: yesterday's does not count", zone: "UTC", t: "2026-03-11T07:00:00Z",
			marketing: []string{"2026-03-10T17:59:00Z"}, want: "2026-03-11T09:00:00Z"},
		{name: "cap counts local days: 23:30Z on the 10th is the 11th in Paris", zone: "Europe/Paris", t: "2026-03-10T12:00:00Z",
			marketing: []string{"2026-03-10T23:30:00Z"}, want: "2026-03-10T12:00:00Z", wantLocal: "13:00 CET"},
		{name: "cap counts local days: and fills the 11th", zone: "Europe/Paris", t: "2026-03-11T08:00:00Z",
			marketing: []string{"2026-03-10T23:30:00Z"}, want: "2026-03-12T08:00:00Z", wantLocal: "09:00 CET"},
		{name: "cap and weekdays: Friday full, Monday", f: funnelWith(t, "09:00-18:00", workDays, 1), zone: "UTC", t: "2026-03-13T10:00:00Z",
			marketing: []string{"2026-03-13T09:00:00Z"}, want: "2026-03-16T09:00:00Z"},
		{name: "cap: several full days in a row", zone: "UTC", t: "2026-03-10T10:00:00Z",
			marketing: []string{"2026-03-10T09:00:00Z", "2026-03-11T09:00:00Z", "2026-03-12T17:00:00Z"}, want: "2026-03-13T09:00:00Z"},
		{name: "all day window", f: funnelWith(t, "00:00-24:00", everyDay, 1), zone: "Europe/Paris", t: "2026-03-10T02:00:00Z", want: "2026-03-10T02:00:00Z"},
		{name: "all day window, capped: local midnight", f: funnelWith(t, "00:00-24:00", everyDay, 1), zone: "Europe/Paris", t: "2026-03-10T02:00:00Z",
			marketing: []string{"2026-03-10T01:00:00Z"}, want: "2026-03-10T23:00:00Z", wantLocal: "00:00 CET"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			if f == nil {
				f = day
			}
			var marketing []time.Time
			for _, m := range tc.marketing {
				marketing = append(marketing, utc(m))
			}
			loc := zone(tc.zone)
			got := f.sendTime(utc(tc.t), loc, marketing)
			if !got.Equal(utc(tc.want)) {
				t.Fatalf("sendTime = %s (%s), want %s", got.UTC().Format(time.RFC3339), got.In(loc).Format("Mon 15:04 MST"), tc.want)
			}
			if tc.wantLocal != "" {
				layout := "15:04 MST"
				if strings.Count(tc.wantLocal, " ") == 2 {
					layout = "Mon 15:04 MST"
				}
				if local := got.In(loc).Format(layout); local != tc.wantLocal {
					t.Fatalf("local time %s, want %s", local, tc.wantLocal)
				}
			}
		})
	}
}

// Over a year of start instants in zones with every kind of offset and DST rule,
// the send time is never before the start, always inside the window on an allowed
// day and under the cap, and the earliest such instant (checked minute by minute).
func TestSendTimeProperties(t *testing.T) {
	f := funnelWith(t, "02:30-18:00", []string{"mon", "tue", "wed", "thu", "fri", "sun"}, 1)
	zones := []string{"UTC", "Europe/Paris", "America/New_York", "Australia/Sydney", "Pacific/Kiritimati", "Asia/Kathmandu", "Australia/Lord_Howe", "America/Havana"}
	allowed := func(u time.Time, loc *time.Location, marketing []time.Time) bool {
		l := u.In(loc)
		m := l.Hour()*60 + l.Minute()
		if !f.days[l.Weekday()] || m < f.SendWindow.Open || m >= f.SendWindow.Close {
			return false
		}
		for _, x := range marketing {
			if dayOf(x.In(loc)) == dayOf(l) {
				return false
			}
		}
		return true
	}
	for _, name := range zones {
		loc := zone(name)
		for start := utc("2026-01-01T00:07:00Z"); start.Before(utc("2027-01-01T00:00:00Z")); start = start.Add(17*time.Hour + 13*time.Minute) {
			marketing := []time.Time{start.Add(20 * time.Hour)}
			got := f.sendTime(start, loc, marketing)
			if got.Before(start) || !allowed(got, loc, marketing) {
				t.Fatalf("%s from %s: %s (%s) is not allowed", name, start, got, got.In(loc))
			}
			// Nothing earlier was allowed (minute steps, from start's minute on).
			for u := start; u.Before(got); u = u.Truncate(time.Minute).Add(time.Minute) {
				if allowed(u, loc, marketing) {
					t.Fatalf("%s from %s: %s, but %s (%s) was allowed", name, start, got.In(loc), u, u.In(loc))
				}
			}
		}
	}
}
