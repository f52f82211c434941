package drip

import "time"

// civilDay is a calendar date, the unit of the daily cap.
type civilDay struct {
	y int
	m time.Month
	d int
}

func dayOf(t time.Time) civilDay {
	y, m, d := t.Date()
	return civilDay{y, m, d}
}

// sendTime returns the first instant at or after t at which the recipient's clock
// (loc) reads a time inside the send window, on an allowed weekday, on a local day
// with fewer than DailyCap of the marketing messages (their send times, any
// campaign): a capped step is deferred to the next day that has room, never dropped.
//
// The window is wall-clock time, so DST needs no special case: within one zone
// period (fixed offset, bounded by ZoneBounds) the wall clock runs with real time, and
// the answer there is plain calendar arithmetic on the wall-clock reading. When the
// answer falls past the period's end (the jump comes first), the search goes on from
// the next period. So an opening the spring-forward jump skips (02:30 on a day that
// goes from 02:00 to 03:00) opens at the jump, 03:00; an opening that exists twice on
// a fall-back day opens at its first occurrence; and a day the zone skipped entirely
// (Pacific/Kiritimati's 1994-12-31) gets no mail.
func (f *Funnel) sendTime(t time.Time, loc *time.Location, marketing []time.Time) time.Time {
	perDay := map[civilDay]int{}
	for _, m := range marketing {
		perDay[dayOf(m.In(loc))]++
	}
	full := func(d civilDay) bool { return perDay[d] >= f.DailyCap }
	for {
		local := t.In(loc)
		_, off := local.Zone()
		_, end := local.ZoneBounds()
		shift := time.Duration(off) * time.Second
		wall := f.nextWall(t.UTC().Add(shift), full) // wall-clock readings, as UTC times
		u := wall.Add(-shift)
		if end.IsZero() || u.Before(end) {
			return u
		}
		t = end
	}
}

// nextWall is sendTime on a clock without zone changes: w and the result are
// wall-clock readings held as UTC times. It ends within len(perDay)+8 days: at least
// one weekday is allowed and only days holding messages are full.
func (f *Funnel) nextWall(w time.Time, full func(civilDay) bool) time.Time {
	day := time.Date(w.Year(), w.Month(), w.Day(), 0, 0, 0, 0, time.UTC)
	for ; ; day = day.AddDate(0, 0, 1) {
		if !f.days[day.Weekday()] || full(dayOf(day)) {
			continue
		}
		open := day.Add(time.Duration(f.SendWindow.Open) * time.Minute)
		close := day.Add(time.Duration(f.SendWindow.Close) * time.Minute)
		switch {
		case w.Before(open):
			return open
		case w.Before(close):
			return w
		}
	}
}
