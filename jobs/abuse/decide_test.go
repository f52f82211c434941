package abuse

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

func ptr[T any](v T) *T { return &v }

// inv is an unpaid EUR invoice.
func inv(id int64, due string, total, paid int64) UnpaidInvoice {
	return UnpaidInvoice{ID: id, Currency: "EUR", TotalMinor: total, PaidMinor: paid, DueAt: utc(due)}
}

func TestDaysLateCountsCalendarDaysInTheAccountZone(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	ny, _ := time.LoadLocation("America/New_York")
	for _, tc := range []struct {
		name     string
		due, now string
		loc      *time.Location
		want     int
	}{
		{"before due", "2026-10-01T00:00:00Z", "2026-09-30T23:59:59Z", time.UTC, -1},
		{"at due", "2026-10-01T00:00:00Z", "2026-10-01T00:00:00Z", time.UTC, 0},
		{"one second before day 3", "2026-10-01T00:00:00Z", "2026-10-03T23:59:59Z", time.UTC, 2},
		{"day 3 exactly", "2026-10-01T00:00:00Z", "2026-10-04T00:00:00Z", time.UTC, 3},
		// Paris leaves summer time on 2026-10-25: the third day after 10:00 CEST on
		// the 23rd ends at 10:00 CET on the 26th, 73 hours later.
		{"autumn DST: 72h is not yet 3 days", "2026-10-23T08:00:00Z", "2026-10-26T08:00:00Z", paris, 2},
		{"autumn DST: 73h is 3 days", "2026-10-23T08:00:00Z", "2026-10-26T09:00:00Z", paris, 3},
		// New York enters summer time on 2026-03-08: 3 days after 12:00 EST on the
		// 6th is 12:00 EDT on the 9th, 71 hours later.
		{"spring DST: 70h59m is 2 days", "2026-03-06T17:00:00Z", "2026-03-09T15:59:00Z", ny, 2},
		{"spring DST: 71h is 3 days", "2026-03-06T17:00:00Z", "2026-03-09T16:00:00Z", ny, 3},
		{"long", "2026-01-01T00:00:00Z", "2026-03-02T00:00:00Z", time.UTC, 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := DaysLate(utc(tc.due), utc(tc.now), tc.loc); got != tc.want {
				t.Fatalf("DaysLate = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestDecideDunning(t *testing.T) {
	p := DefaultPolicy().Dunning
	due := "2026-10-01T00:00:00Z" // oldest invoice, UTC account unless said otherwise
	day := func(n int, extra ...time.Duration) time.Time {
		t := utc(due).AddDate(0, 0, n)
		for _, d := range extra {
			t = t.Add(d)
		}
		return t
	}
	one := []UnpaidInvoice{inv(1001, due, 12000, 0)}
	warnedAt := day(14)
	openCase := func(state string, since time.Time) *Case {
		return &Case{ID: 7, AccountID: 42, Machine: Dunning, State: state, Version: 3, StateSince: since}
	}
	minTwo := DefaultPolicy().Dunning
	minTwo.Suspension.MinUnpaidInvoices = 2

	for _, tc := range []struct {
		name       string
		c          *Case
		unpaid     []UnpaidInvoice
		tz         string
		tags       []string
		status     string
		now        time.Time
		policy     *DunningPolicy
		want       string
		wantReason string
	}{
		{name: "nothing unpaid, no case", unpaid: nil, now: day(30), want: ""},
		{name: "day 2: too early", unpaid: one, now: day(3, -time.Second), want: ""},
		{name: "day 3: reminder", unpaid: one, now: day(3), want: EventRemind, wantReason: "invoice 1001 due 2026-10-01 00:00 UTC is 3 days overdue; unpaid EUR 120.00 in 1 invoice"},
		{name: "Paris: day 3 ends at local midnight", unpaid: []UnpaidInvoice{inv(1001, "2026-09-30T22:00:00Z", 12000, 0)}, tz: "Europe/Paris",
			now: utc("2026-10-03T22:00:00Z"), want: EventRemind},
		{name: "Paris autumn DST: 72h after due is still day 2", unpaid: []UnpaidInvoice{inv(1001, "2026-10-23T08:00:00Z", 12000, 0)},
			tz: "Europe/Paris", now: utc("2026-10-26T08:30:00Z"), want: ""},
		{name: "Paris autumn DST: 73h after due is day 3", unpaid: []UnpaidInvoice{inv(1001, "2026-10-23T08:00:00Z", 12000, 0)},
			tz: "Europe/Paris", now: utc("2026-10-26T09:00:00Z"), want: EventRemind},
		{name: "New York spring DST: 71h after due is day 3", unpaid: []UnpaidInvoice{inv(1001, "2026-03-06T17:00:00Z", 12000, 0)},
			tz: "America/New_York", now: utc("2026-03-09T16:00:00Z"), want: EventRemind},
		{name: "unknown zone counts in UTC", unpaid: one, tz: "Mars/Olympus", now: day(3), want: EventRemind},
		{name: "reminded, day 13: nothing", c: openCase(StateReminded, day(3)), unpaid: one, now: day(14, -time.Second), want: ""},
		{name: "reminded, day 14: warning", c: openCase(StateReminded, day(3)), unpaid: one, now: day(14), want: EventWarn},
		{name: "first seen at day 25: warned, not suspended", unpaid: one, now: day(25), want: EventWarn,
			wantReason: "(suspension level, but a warning comes first)"},
		{name: "warned, day 21 but notice not over", c: openCase(StateWarned, day(19)), unpaid: one, now: day(21), want: "",
			wantReason: "notice runs until 2026-10-23T00:00:00Z"},
		{name: "warned, notice over: suspend", c: openCase(StateWarned, day(19)), unpaid: one, now: day(22), want: EventSuspend},
		{name: "warned, day 21: suspend", c: openCase(StateWarned, warnedAt), unpaid: one, now: day(21), want: EventSuspend},
		{name: "warned, day 20: not yet", c: openCase(StateWarned, warnedAt), unpaid: one, now: day(21, -time.Nanosecond), want: ""},
		{name: "warned, card still retried: suspension waits", c: openCase(StateWarned, warnedAt),
			unpaid: []UnpaidInvoice{{ID: 1001, Currency: "EUR", TotalMinor: 12000, DueAt: utc(due), Retrying: true}}, now: day(30), want: ""},
		{name: "card still retried: reminders do not wait",
			unpaid: []UnpaidInvoice{{ID: 1001, Currency: "EUR", TotalMinor: 12000, DueAt: utc(due), Retrying: true}}, now: day(3), want: EventRemind},
		{name: "suspended, day 59: nothing", c: openCase(StateSuspended, day(21)), unpaid: one, now: day(60, -time.Second), want: ""},
		{name: "suspended, day 60: propose termination", c: openCase(StateSuspended, day(21)), unpaid: one, now: day(60), want: EventProposeTermination},
		{name: "suspended, day 60, suspension unconfirmed: no step further",
			c: &Case{ID: 7, Machine: Dunning, State: StateSuspended, StateSince: day(21), PendingActions: 2}, unpaid: one, now: day(60), want: "",
			wantReason: "not confirmed"},
		{name: "termination proposed: waits for a person", c: openCase(StateTerminationProposed, day(60)), unpaid: one, now: day(200), want: ""},
		{name: "approved, retention not over", c: &Case{ID: 7, Machine: Dunning, State: StateTerminationApproved, StateSince: day(61),
			ApprovedAt: ptr(day(61)), ApprovedBy: "operator:alice"}, unpaid: one, now: day(91, -time.Second), want: ""},
		{name: "approved, retention over: terminate", c: &Case{ID: 7, Machine: Dunning, State: StateTerminationApproved, StateSince: day(61),
			ApprovedAt: ptr(day(61)), ApprovedBy: "operator:alice"}, unpaid: one, now: day(91), want: EventTerminate},
		{name: "approved but paid: resolve", c: &Case{ID: 7, Machine: Dunning, State: StateTerminationApproved, StateSince: day(61),
			ApprovedAt: ptr(day(61))}, unpaid: nil, now: day(91), want: EventResolve},
		{name: "paid while reminded", c: openCase(StateReminded, day(3)), unpaid: nil, now: day(5), want: EventResolve, wantReason: "paid: nothing unpaid"},
		{name: "paid while suspended: resolve (lifts)", c: openCase(StateSuspended, day(21)), unpaid: nil, now: day(25), want: EventResolve},
		{name: "oldest paid off, next one 10 days late: suspension no longer justified",
			c: openCase(StateSuspended, day(21)), unpaid: []UnpaidInvoice{inv(1002, "2026-10-15T00:00:00Z", 9000, 0)}, now: day(24),
			want: EventResolve, wantReason: "below suspension level: invoice 1002 due 2026-10-15 00:00 UTC is 10 days overdue"},
		{name: "partial payment on the oldest keeps its clock",
			c: openCase(StateSuspended, day(21)), unpaid: []UnpaidInvoice{inv(1001, due, 12000, 11000)}, now: day(24), want: ""},
		{name: "partial payment below the suspension balance: resolve",
			c: openCase(StateSuspended, day(21)), unpaid: []UnpaidInvoice{inv(1001, due, 12000, 11700)}, now: day(24),
			want: EventResolve, wantReason: "below suspension level"},
		{name: "warned, partial payment re-anchors the clock: stays warned",
			c: openCase(StateWarned, warnedAt), unpaid: []UnpaidInvoice{inv(1002, "2026-10-15T00:00:00Z", 9000, 0)}, now: day(22), want: ""},
		{name: "a fully paid invoice left open does not count",
			c: openCase(StateWarned, warnedAt), unpaid: []UnpaidInvoice{inv(1001, due, 12000, 12000)}, now: day(22), want: EventResolve},
		{name: "below the reminder balance: nothing", unpaid: []UnpaidInvoice{inv(1001, due, 50, 0)}, now: day(30), want: ""},
		{name: "currency without threshold: any amount",
			unpaid: []UnpaidInvoice{{ID: 1001, Currency: "CHF", TotalMinor: 1, DueAt: utc(due)}}, now: day(3), want: EventRemind},
		{name: "min_unpaid_invoices: one invoice stays warned", c: openCase(StateWarned, warnedAt), unpaid: one, now: day(30), policy: &minTwo, want: ""},
		{name: "min_unpaid_invoices: two invoices suspend", c: openCase(StateWarned, warnedAt),
			unpaid: append([]UnpaidInvoice{inv(1002, "2026-10-20T00:00:00Z", 100, 0)}, one...), now: day(30), policy: &minTwo, want: EventSuspend},
		{name: "excluded: never dunned", tags: []string{"never_suspend"}, unpaid: one, now: day(40), want: ""},
		{name: "excluded with an open case: exclude", c: openCase(StateSuspended, day(21)), tags: []string{"vip", "never_suspend"},
			unpaid: one, now: day(40), want: EventExclude, wantReason: "account tagged never_suspend"},
		{name: "closed case: nothing", c: openCase(StateResolved, day(21)), unpaid: one, now: day(40), want: ""},
		{name: "terminated account: no new case", status: "terminated", unpaid: one, now: day(90), want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pol := p
			if tc.policy != nil {
				pol = *tc.policy
			}
			f := DunningFacts{AccountID: 42, Email: "a@example.com", TimeZone: tc.tz, Tags: tc.tags, Unpaid: tc.unpaid, AccountStatus: tc.status}
			d := DecideDunning(tc.c, f, tc.now, pol)
			if d.Event != tc.want {
				t.Fatalf("event %q, want %q (reason %q)", d.Event, tc.want, d.Reason)
			}
			if tc.wantReason != "" && !strings.Contains(d.Reason, tc.wantReason) {
				t.Fatalf("reason %q, want it to contain %q", d.Reason, tc.wantReason)
			}
			if d.Event != "" && !canFire(Dunning, stateOf(tc.c), d.Event) {
				t.Fatalf("decided %s, which the machine does not allow from %s", d.Event, stateOf(tc.c))
			}
		})
	}
}

func stateOf(c *Case) string {
	if c == nil {
		return StateGood
	}
	return c.State
}

func TestDunningEvidence(t *testing.T) {
	f := DunningFacts{TimeZone: "Europe/Paris", Unpaid: []UnpaidInvoice{
		inv(1002, "2026-10-15T00:00:00Z", 9000, 0),
		inv(1001, "2026-10-01T00:00:00Z", 12000, 2000),
	}}
	d := DecideDunning(nil, f, utc("2026-10-20T00:00:00Z"), DefaultPolicy().Dunning)
	ev := d.Evidence.(DunningEvidence)
	if ev.OldestInvoice != 1001 || ev.DaysLate != 19 || ev.UnpaidInvoices != 2 || ev.Unpaid["EUR"] != "190.00" ||
		len(ev.PartlyPaid) != 1 || ev.PartlyPaid[0] != 1001 || ev.TimeZone != "Europe/Paris" || ev.Level != "warning" {
		t.Fatalf("evidence %+v", ev)
	}
	if d.Event != EventWarn {
		t.Fatalf("event %q", d.Event)
	}
}

func TestCPUSustained(t *testing.T) {
	p := DefaultPolicy().FreeCredit.CPU // 90 %, 80 % of VMs, 3h, 3 samples, gap 1h
	now := utc("2026-11-20T12:00:00Z")
	hot := func(ago time.Duration) CPUSample { return CPUSample{At: now.Add(-ago), Running: 5, Hot: 4} }
	cold := func(ago time.Duration) CPUSample { return CPUSample{At: now.Add(-ago), Running: 5, Hot: 3} }
	h := time.Hour
	for _, tc := range []struct {
		name    string
		samples []CPUSample
		want    bool
	}{
		{"no samples", nil, false},
		{"hot for 3h in 4 samples", []CPUSample{hot(3 * h), hot(2 * h), hot(h), hot(0)}, true},
		{"order does not matter", []CPUSample{hot(0), hot(3 * h), hot(h), hot(2 * h)}, true},
		{"hot for 2h59m", []CPUSample{hot(3*h - time.Minute), hot(2 * h), hot(h), hot(0)}, false},
		{"3 of 5 VMs is not most", []CPUSample{cold(3 * h), cold(2 * h), cold(h), cold(0)}, false},
		{"a cold sample breaks the streak", []CPUSample{hot(4 * h), hot(3 * h), cold(2 * h), hot(h), hot(0)}, false},
		{"a gap over 1h breaks the streak", []CPUSample{hot(3 * h), hot(90 * time.Minute), hot(0)}, false},
		{"latest sample too old", []CPUSample{hot(5 * h), hot(4 * h), hot(3 * h), hot(2 * h)}, false},
		{"too few samples", []CPUSample{hot(3 * h), hot(0)}, false},
		{"no running VM is not hot", []CPUSample{{At: now.Add(-3 * h)}, {At: now.Add(-2 * h)}, {At: now.Add(-h)}, {At: now}}, false},
		{"future samples ignored", []CPUSample{hot(3 * h), hot(2 * h), hot(h), hot(0), cold(-h)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := CPUSustained(tc.samples, now, p)
			if s.Fired != tc.want {
				t.Fatalf("fired %v, want %v: %s", s.Fired, tc.want, s.Detail)
			}
		})
	}
}

func TestDecideFreeCredit(t *testing.T) {
	p := DefaultPolicy().FreeCredit
	now := utc("2026-11-20T12:00:00Z")
	signup := now.Add(-10 * time.Hour)
	var hotSamples []CPUSample
	for i := 4; i >= 0; i-- {
		hotSamples = append(hotSamples, CPUSample{At: now.Add(-time.Duration(i) * time.Hour), Running: 2, Hot: 2})
	}
	var fiveFast []VMFact
	for i := 0; i < 5; i++ {
		fiveFast = append(fiveFast, VMFact{ID: "vm", State: "Running", Created: signup.Add(time.Duration(i) * time.Hour)})
	}
	miner := FreeCreditFacts{AccountID: 7, Email: "x@mailinator.com", CreatedAt: signup, HasFreeCredit: true,
		CPUSamples: hotSamples, DisposableDomain: "mailinator.com"}
	with := func(edit func(*FreeCreditFacts)) FreeCreditFacts {
		f := miner
		edit(&f)
		return f
	}
	confirmedAt := now.Add(-30 * 24 * time.Hour)
	for _, tc := range []struct {
		name      string
		c         *Case
		f         FreeCreditFacts
		now       time.Time
		want      string
		wantScore int
	}{
		{name: "cpu + disposable email = 80: flag", f: miner, want: EventFlag, wantScore: 80},
		{name: "cpu alone = 50: heavy user, not flagged", f: with(func(f *FreeCreditFacts) { f.DisposableDomain = "" }), want: "", wantScore: 50},
		{name: "disposable + 3 signups from one IP = 60: flag", f: with(func(f *FreeCreditFacts) {
			f.CPUSamples, f.SignupIP, f.IPSignupsTotal, f.IPSignups = nil, "203.0.113.9", 2, []int64{8, 9}
		}), want: EventFlag, wantScore: 60},
		{name: "2 signups from one IP is not velocity", f: with(func(f *FreeCreditFacts) {
			f.CPUSamples, f.SignupIP, f.IPSignupsTotal, f.IPSignups = nil, "203.0.113.9", 1, []int64{8}
		}), want: "", wantScore: 30},
		{name: "5 instances in the first day + cpu = 70", f: with(func(f *FreeCreditFacts) { f.DisposableDomain, f.VMs = "", fiveFast }),
			want: EventFlag, wantScore: 70},
		{name: "verified payment method: not on free credit", f: with(func(f *FreeCreditFacts) { f.PaymentMethodVerified = true }), want: ""},
		{name: "no free credit", f: with(func(f *FreeCreditFacts) { f.HasFreeCredit = false }), want: ""},
		{name: "excluded", f: with(func(f *FreeCreditFacts) { f.Tags = []string{"never_suspend"} }), want: ""},
		{name: "flagged: suspend at once", c: &Case{ID: 3, Machine: FreeCredit, State: StateFlagged, Version: 1}, f: miner, want: EventSuspend},
		{name: "suspended: waits for a person", c: &Case{ID: 3, Machine: FreeCredit, State: StateSuspended, Version: 2}, f: miner, want: ""},
		{name: "suspended and excluded: exclude", c: &Case{ID: 3, Machine: FreeCredit, State: StateSuspended, Version: 2},
			f: with(func(f *FreeCreditFacts) { f.Tags = []string{"never_suspend"} }), want: EventExclude},
		{name: "confirmed, retention over: terminate", c: &Case{ID: 3, Machine: FreeCredit, State: StateConfirmed, Version: 3,
			ApprovedAt: &confirmedAt, ApprovedBy: "operator:bob"}, f: miner, want: EventTerminate},
		{name: "confirmed, retention not over", c: &Case{ID: 3, Machine: FreeCredit, State: StateConfirmed, Version: 3,
			ApprovedAt: ptr(confirmedAt.Add(time.Second)), ApprovedBy: "operator:bob"}, f: miner, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := now
			if !tc.now.IsZero() {
				n = tc.now
			}
			d := DecideFreeCredit(tc.c, tc.f, n, p)
			if d.Event != tc.want {
				t.Fatalf("event %q, want %q (reason %q)", d.Event, tc.want, d.Reason)
			}
			ev := d.Evidence.(FreeCreditEvidence)
			if tc.wantScore != 0 && ev.Score != tc.wantScore {
				t.Fatalf("score %d, want %d: %+v", ev.Score, tc.wantScore, ev.Signals)
			}
			if d.Event != "" && !canFire(FreeCredit, stateOf(tc.c), d.Event) {
				t.Fatalf("decided %s, which the machine does not allow from %s", d.Event, stateOf(tc.c))
			}
		})
	}
}

func TestSignalsOffAtWeightZero(t *testing.T) {
	p := DefaultPolicy().FreeCredit
	p.DisposableEmail.Weight = 0
	p.IPVelocity.Weight = 0
	_, sigs := Score(FreeCreditFacts{DisposableDomain: "mailinator.com"}, utc("2026-11-20T12:00:00Z"), p)
	for _, s := range sigs {
		if s.Name == "disposable_email" || s.Name == "ip_velocity" {
			t.Fatalf("signal %s computed at weight 0", s.Name)
		}
	}
	if len(sigs) != 2 {
		t.Fatalf("signals %+v", sigs)
	}
}
