package drip

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func at(state string) *Case {
	return &Case{ID: 7, AccountID: 42, State: state, Version: 2}
}

func times(s ...string) []time.Time {
	var out []time.Time
	for _, x := range s {
		out = append(out, utc(x))
	}
	return out
}

func TestDecide(t *testing.T) {
	def := DefaultFunnel()
	paidGoal := DefaultFunnel()
	paidGoal.Goal = GoalPaidInvoice
	previous, err := ParseFunnel("previous.toml", []byte(`
[funnel]
name = "p"
goal = "paid_invoice"
send_window = "09:00-18:00"
weekdays = ["mon","tue","wed","thu","fri","sat","sun"]
daily_cap = 1
fallback_time_zone = "Europe/Paris"
[[step]]
name = "a"
template = "welcome"
from = "signup"
after = "0d"
unless = ["has_vm"]
[[step]]
name = "b"
template = "tips"
from = "previous"
after = "1d"
`))
	if err != nil {
		t.Fatal(err)
	}
	// A Monday signup at 10:00 UTC with a 14-day trial.
	signup := utc("2026-03-09T10:00:00Z")
	expiry := utc("2026-03-23T10:00:00Z")
	base := Input{SignupAt: signup, TrialExpiresAt: expiry, TimeZone: "UTC"}
	with := func(change func(*Input)) Input {
		in := base
		change(&in)
		return in
	}
	sentWelcome := func(in *Input) { in.Case, in.LastSentAt = at("welcome"), signup.Add(time.Minute) }

	for _, tc := range []struct {
		name   string
		f      *Funnel
		in     Input
		now    string
		event  string
		step   string
		exit   string
		due    string
		sendAt string
		reason string
	}{
		// Entering and the welcome.
		{name: "signup: welcome now", in: base, now: "2026-03-09T10:15:00Z",
			event: EventSend, step: "welcome", due: "2026-03-09T10:00:00Z", sendAt: "2026-03-09T10:15:00Z",
			reason: "welcome due 2026-03-09 10:00 UTC, sending 2026-03-09 10:15 UTC"},
		{name: "late-night signup: welcome queued now, sent at 09:00", in: with(func(in *Input) { in.SignupAt = utc("2026-03-09T22:40:00Z") }),
			now: "2026-03-09T22:45:00Z", event: EventSend, step: "welcome", due: "2026-03-09T22:40:00Z", sendAt: "2026-03-10T09:00:00Z"},
		{name: "New York evening signup: 09:00 EDT next day", in: with(func(in *Input) { in.SignupAt, in.TimeZone = utc("2026-03-10T02:00:00Z"), "America/New_York" }),
			now: "2026-03-10T02:10:00Z", event: EventSend, step: "welcome", sendAt: "2026-03-10T13:00:00Z",
			reason: "welcome due 2026-03-09 22:00 EDT, sending 2026-03-10 09:00 EDT"},
		{name: "Kathmandu dawn signup", in: with(func(in *Input) { in.SignupAt, in.TimeZone = utc("2026-03-10T01:00:00Z"), "Asia/Kathmandu" }),
			now: "2026-03-10T01:00:00Z", event: EventSend, step: "welcome", sendAt: "2026-03-10T03:15:00Z"},
		{name: "another campaign's mail today: welcome tomorrow", in: with(func(in *Input) { in.Marketing = times("2026-03-09T09:30:00Z") }),
			now: "2026-03-09T10:15:00Z", event: EventSend, step: "welcome", sendAt: "2026-03-10T09:00:00Z"},

		// Waiting, skipping, sending.
		{name: "welcome queued, not delivered: wait", in: with(func(in *Input) { in.Case, in.Pending = at("welcome"), "welcome" }),
			now: "2026-03-12T10:00:00Z", event: "", reason: "step welcome is queued, not delivered yet"},
		{name: "first_vm not due yet: wait, with the projection", in: with(sentWelcome), now: "2026-03-11T09:59:59Z",
			event: "", step: "first_vm", due: "2026-03-11T10:00:00Z", sendAt: "2026-03-11T10:00:00Z", reason: "first_vm due 2026-03-11 10:00 UTC"},
		{name: "first_vm due", in: with(sentWelcome), now: "2026-03-11T10:00:00Z",
			event: EventSend, step: "first_vm", due: "2026-03-11T10:00:00Z", sendAt: "2026-03-11T10:00:00Z"},
		{name: "first_vm due, has a VM: skip", in: with(func(in *Input) { sentWelcome(in); in.Facts.HasVM = true }), now: "2026-03-11T10:00:00Z",
			event: EventSkip, step: "first_vm", due: "2026-03-11T10:00:00Z", reason: "first_vm: has_vm"},
		{name: "has a VM before first_vm is due: unless is read at the due time", in: with(func(in *Input) { sentWelcome(in); in.Facts.HasVM = true }),
			now: "2026-03-10T10:00:00Z", event: "", step: "first_vm"},
		{name: "tips due after hours: queued now, out at 09:00", in: with(func(in *Input) { in.Case = at("first_vm"); in.SignupAt = utc("2026-03-09T17:30:00Z") }),
			now: "2026-03-14T18:00:00Z", event: EventSend, step: "tips", due: "2026-03-14T17:30:00Z", sendAt: "2026-03-15T09:00:00Z"},
		{name: "tips capped: deferred a day, never dropped", in: with(func(in *Input) { in.Case, in.Marketing = at("first_vm"), times("2026-03-14T09:00:00Z") }),
			now: "2026-03-14T10:00:00Z", event: EventSend, step: "tips", due: "2026-03-14T10:00:00Z", sendAt: "2026-03-15T09:00:00Z"},
		{name: "a run missed for days: sent now", in: with(func(in *Input) { in.Case = at("first_vm") }),
			now: "2026-03-17T11:00:00Z", event: EventSend, step: "tips", due: "2026-03-14T10:00:00Z", sendAt: "2026-03-17T11:00:00Z"},
		{name: "trial ending: 3 days before expiry", in: with(func(in *Input) { in.Case = at("tips") }), now: "2026-03-20T10:00:00Z",
			event: EventSend, step: "trial_ending", due: "2026-03-20T10:00:00Z", sendAt: "2026-03-20T10:00:00Z"},
		{name: "trial ending: no trial credit, skipped", in: with(func(in *Input) { in.Case, in.TrialExpiresAt = at("tips"), time.Time{} }),
			now: "2026-03-14T10:00:00Z", event: EventSkip, step: "trial_ending", reason: "no trial credit"},
		{name: "trial ending late but before the end: sent", in: with(func(in *Input) { in.Case = at("tips") }), now: "2026-03-23T09:00:00Z",
			event: EventSend, step: "trial_ending", sendAt: "2026-03-23T09:00:00Z"},
		{name: "trial already over: skipped", in: with(func(in *Input) { in.Case = at("tips") }), now: "2026-03-23T10:00:00Z",
			event: EventSkip, step: "trial_ending", reason: "the trial ends 2026-03-23 10:00 UTC, before the message could go out (2026-03-23 10:00 UTC)"},
		{name: "trial ends before the window opens: skipped", in: with(func(in *Input) { in.Case, in.TrialExpiresAt = at("tips"), utc("2026-03-23T08:00:00Z") }),
			now: "2026-03-22T19:00:00Z", event: EventSkip, step: "trial_ending"},
		{name: "goal paid_invoice: a verified card skips trial_ending", f: paidGoal,
			in: with(func(in *Input) { in.Case, in.Facts.PaymentMethodVerified = at("tips"), true }), now: "2026-03-20T10:00:00Z",
			event: EventSkip, step: "trial_ending", reason: "trial_ending: payment_method_verified"},
		{name: "last call", in: with(func(in *Input) { in.Case = at("trial_ending") }), now: "2026-03-22T10:00:00Z",
			event: EventSend, step: "last_call", due: "2026-03-22T10:00:00Z"},
		{name: "after the last step: complete", in: with(func(in *Input) { in.Case = at("last_call") }), now: "2026-03-22T10:00:00Z",
			event: EventComplete, reason: "after the last step, last_call"},
		{name: "last step still queued: no completion yet", in: with(func(in *Input) { in.Case, in.Pending = at("last_call"), "last_call" }),
			now: "2026-03-22T10:00:00Z", event: ""},

		// The goal and the exits, ahead of any step due.
		{name: "goal beats a due step", in: with(func(in *Input) { sentWelcome(in); in.Facts.PaymentMethodVerified = true }),
			now: "2026-03-11T10:00:00Z", event: EventConvert, reason: "goal met: payment method verified"},
		{name: "goal beats a queued step (delivery cancels it)", in: with(func(in *Input) {
			in.Case, in.Pending, in.Facts.PaymentMethodVerified = at("tips"), "tips", true
		}), now: "2026-03-14T10:00:00Z", event: EventConvert},
		{name: "goal at signup: converted before the welcome", in: with(func(in *Input) { in.Facts.PaymentMethodVerified = true }),
			now: "2026-03-09T10:00:00Z", event: EventConvert},
		{name: "paid_invoice goal: a card alone is not the goal", f: paidGoal, in: with(func(in *Input) { sentWelcome(in); in.Facts.PaymentMethodVerified = true }),
			now: "2026-03-11T10:00:00Z", event: EventSend, step: "first_vm"},
		{name: "paid_invoice goal met", f: paidGoal, in: with(func(in *Input) { sentWelcome(in); in.Facts.PaidInvoice = true }),
			now: "2026-03-11T10:00:00Z", event: EventConvert, reason: "goal met: first invoice paid"},
		{name: "unsubscribed", in: with(func(in *Input) { sentWelcome(in); in.Facts.Unsubscribed = true }),
			now: "2026-03-11T10:00:00Z", event: EventExit, exit: ExitUnsubscribed},
		{name: "unsubscribe suppression", in: with(func(in *Input) { sentWelcome(in); in.Facts.Suppression = SuppressedUnsubscribe }),
			now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitUnsubscribed},
		{name: "hard bounce", in: with(func(in *Input) { sentWelcome(in); in.Facts.Suppression = SuppressedBounce }),
			now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitBounced, reason: "address suppressed (bounce)"},
		{name: "complaint", in: with(func(in *Input) { sentWelcome(in); in.Facts.Suppression = SuppressedComplaint }),
			now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitComplaint},
		{name: "suspended", in: with(func(in *Input) { sentWelcome(in); in.Facts.AccountStatus = "suspended" }),
			now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitSuspended},
		{name: "terminated", in: with(func(in *Input) { in.Facts.AccountStatus = "terminated" }),
			now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitTerminated},
		{name: "open dunning case", in: with(func(in *Input) { sentWelcome(in); in.Facts.OpenCases = []string{"dunning"} }),
			now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitOpenCase, reason: "open dunning case"},
		{name: "an exit outranks the goal", in: with(func(in *Input) {
			sentWelcome(in)
			in.Facts.PaymentMethodVerified, in.Facts.OpenCases = true, []string{"free_credit"}
		}), now: "2026-03-10T10:00:00Z", event: EventExit, exit: ExitOpenCase},
		{name: "active account with trial credit carries on", in: with(func(in *Input) { sentWelcome(in); in.Facts.AccountStatus, in.Facts.TrialCreditLeft = "active", true }),
			now: "2026-03-11T10:00:00Z", event: EventSend, step: "first_vm"},

		// Closed cases: no re-entry, whatever the facts.
		{name: "converted: nothing, ever", in: with(func(in *Input) { in.Case = at(StateConverted) }), now: "2026-04-09T10:00:00Z",
			event: "", reason: "left the funnel (converted): an account goes through it once"},
		{name: "exited and now converted: still nothing", in: with(func(in *Input) { in.Case, in.Facts.PaymentMethodVerified = at(StateExited), true }),
			now: "2026-04-09T10:00:00Z", event: ""},
		{name: "completed", in: with(func(in *Input) { in.Case = at(StateCompleted) }), now: "2026-04-09T10:00:00Z", event: ""},

		// DST: whole days are calendar days in the recipient's zone.
		{name: "Paris: 2 days across spring forward is 47 hours", in: with(func(in *Input) {
			in.Case, in.SignupAt, in.TimeZone = at("welcome"), utc("2026-03-27T09:30:00Z"), "Europe/Paris"
		}), now: "2026-03-29T08:30:00Z", event: EventSend, step: "first_vm", due: "2026-03-29T08:30:00Z", sendAt: "2026-03-29T08:30:00Z",
			reason: "first_vm due 2026-03-29 10:30 CEST, sending 2026-03-29 10:30 CEST"},
		{name: "Paris: one minute before", in: with(func(in *Input) {
			in.Case, in.SignupAt, in.TimeZone = at("welcome"), utc("2026-03-27T09:30:00Z"), "Europe/Paris"
		}), now: "2026-03-29T08:29:00Z", event: "", step: "first_vm"},
		{name: "Sydney: 2 days across fall back is 49 hours", in: with(func(in *Input) {
			in.Case, in.SignupAt, in.TimeZone = at("welcome"), utc("2026-04-03T23:00:00Z"), "Australia/Sydney"
		}), now: "2026-04-06T00:00:00Z", event: EventSend, step: "first_vm", due: "2026-04-06T00:00:00Z", sendAt: "2026-04-06T00:00:00Z"},
		{name: "Sydney: 48 hours is not yet 2 days", in: with(func(in *Input) {
			in.Case, in.SignupAt, in.TimeZone = at("welcome"), utc("2026-04-03T23:00:00Z"), "Australia/Sydney"
		}), now: "2026-04-05T23:00:00Z", event: "", step: "first_vm", due: "2026-04-06T00:00:00Z"},
		{name: "New York: a Saturday-evening due time goes out Sunday 09:00 EDT", in: with(func(in *Input) {
			in.Case, in.SignupAt, in.TimeZone = at("welcome"), utc("2026-03-05T23:30:00Z"), "America/New_York"
		}), now: "2026-03-07T23:30:00Z", event: EventSend, step: "first_vm", due: "2026-03-07T23:30:00Z", sendAt: "2026-03-08T13:00:00Z"},
		{name: "Kiritimati: due on UTC's Sunday, a Monday there", in: with(func(in *Input) {
			in.Case, in.SignupAt, in.TimeZone = at("welcome"), utc("2026-03-06T21:00:00Z"), "Pacific/Kiritimati"
		}), now: "2026-03-08T21:00:00Z", event: EventSend, step: "first_vm", due: "2026-03-08T21:00:00Z", sendAt: "2026-03-08T21:00:00Z",
			reason: "first_vm due 2026-03-09 11:00 +14"},

		// Time zones the account got wrong.
		{name: "invalid zone: the fallback's window", in: with(func(in *Input) { in.SignupAt, in.TimeZone = utc("2026-03-09T06:00:00Z"), "Mars/Olympus" }),
			now: "2026-03-09T06:00:00Z", event: EventSend, step: "welcome", sendAt: "2026-03-09T09:00:00Z"},
		{name: "invalid zone, Paris fallback", f: previous, in: with(func(in *Input) { in.SignupAt, in.TimeZone = utc("2026-03-09T06:00:00Z"), "Mars/Olympus" }),
			now: "2026-03-09T06:00:00Z", event: EventSend, step: "a", sendAt: "2026-03-09T08:00:00Z"},

		// from = "previous": the actual send, not the due time.
		{name: "previous: counts from the delivery", f: previous, in: with(func(in *Input) {
			in.Case, in.LastSentAt, in.TimeZone = at("a"), utc("2026-03-10T16:00:00Z"), "UTC"
		}), now: "2026-03-11T15:59:00Z", event: "", step: "b", due: "2026-03-11T16:00:00Z"},
		{name: "previous: due", f: previous, in: with(func(in *Input) {
			in.Case, in.LastSentAt, in.TimeZone = at("a"), utc("2026-03-10T16:00:00Z"), "UTC"
		}), now: "2026-03-11T16:00:00Z", event: EventSend, step: "b", due: "2026-03-11T16:00:00Z"},
		{name: "previous: step a skipped, nothing sent: from signup", f: previous, in: with(func(in *Input) { in.Case = at("a") }),
			now: "2026-03-10T10:00:00Z", event: EventSend, step: "b", due: "2026-03-10T10:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.f
			if f == nil {
				f = def
			}
			d := f.Decide(tc.in, utc(tc.now))
			if d.Event != tc.event || d.Exit != tc.exit || (tc.step != "" && d.Step != tc.step) {
				t.Fatalf("event %q step %q exit %q (%s), want %q %q %q", d.Event, d.Step, d.Exit, d.Reason, tc.event, tc.step, tc.exit)
			}
			if tc.due != "" && !d.DueAt.Equal(utc(tc.due)) {
				t.Errorf("due %s, want %s", d.DueAt, tc.due)
			}
			if tc.sendAt != "" && !d.SendAt.Equal(utc(tc.sendAt)) {
				t.Errorf("send at %s (%s), want %s", d.SendAt, d.SendAt.In(d.Location), tc.sendAt)
			}
			if d.Event == EventSend && d.SendAt.Before(utc(tc.now)) {
				t.Errorf("send at %s is before now", d.SendAt)
			}
			if d.Event == EventSkip && !d.SendAt.IsZero() {
				t.Errorf("a skip has a send time %s", d.SendAt)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q, want %q", d.Reason, tc.reason)
			}
			if d.Event != "" && !f.Machine().Can(stateOf(tc.in.Case), d.Event) {
				t.Errorf("the machine cannot %s from %s", d.Event, stateOf(tc.in.Case))
			}
			if d.Problem != "" {
				t.Errorf("problem %s", d.Problem)
			}
		})
	}
}

func stateOf(c *Case) string {
	if c == nil {
		return StateSignedUp
	}
	return c.State
}

func TestDecideFlagsTheFallbackZoneAndRecordsEvidence(t *testing.T) {
	f := DefaultFunnel()
	in := Input{SignupAt: utc("2026-03-09T06:00:00Z"), TimeZone: "", Facts: Facts{HasVM: true, TrialCreditLeft: true}}
	d := f.Decide(in, utc("2026-03-09T06:05:00Z"))
	if !d.ZoneFallback || d.Location != time.UTC || d.AccountTimeZone != "" {
		t.Fatalf("zone %s fallback %v", d.Location, d.ZoneFallback)
	}
	b, err := json.Marshal(d.Cases().Evidence)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"funnel":"onboarding","goal":"payment_method_verified","step":"welcome",` +
		`"facts":{"has_vm":true,"payment_method_verified":false,"paid_invoice":false,"trial_credit_left":true,"unsubscribed":false,"account_status":""},` +
		`"time_zone":"UTC","account_time_zone":"\"\" (invalid or empty: fallback zone used)",` +
		`"due_at":"2026-03-09T06:00:00Z","send_at":"2026-03-09T09:00:00Z","local_time":"2026-03-09T09:00:00Z"}`
	if string(b) != want {
		t.Fatalf("evidence\n%s\nwant\n%s", b, want)
	}
	if c := d.Cases(); c.Event != EventSend || c.Reason != d.Reason {
		t.Fatalf("cases decision %+v", c)
	}

	d = f.Decide(Input{SignupAt: utc("2026-03-09T06:00:00Z"), TimeZone: "Europe/Paris"}, utc("2026-03-09T06:05:00Z"))
	if d.ZoneFallback || d.Evidence.AccountTimeZone != "" || d.Evidence.LocalTime != "2026-03-09T09:00:00+01:00" {
		t.Fatalf("valid zone: %+v", d.Evidence)
	}
}

func TestDecideReportsAStateTheFunnelDoesNotHave(t *testing.T) {
	f := DefaultFunnel()
	d := f.Decide(Input{Case: at("onboarding_v1_day3"), SignupAt: utc("2026-03-09T06:00:00Z"), TimeZone: "UTC"}, utc("2026-03-12T06:00:00Z"))
	if d.Event != "" || !strings.Contains(d.Problem, `case 7 is in state "onboarding_v1_day3", which funnel onboarding does not have`) {
		t.Fatalf("%+v", d)
	}
}

// A signup's whole life, decided every 15 minutes against a fake outbox that
// delivers each message at its send time: for signups spread over a year in zones of
// every kind, each step goes out once, in order, never before it is due, always in
// the recipient's window, and at most one a local day; and the funnel completes.
func TestFunnelLifecycleSimulated(t *testing.T) {
	f := DefaultFunnel()
	zones := []string{"UTC", "Europe/Paris", "America/New_York", "Australia/Sydney", "Pacific/Kiritimati", "Asia/Kathmandu", "Mars/Olympus"}
	for _, name := range zones {
		for signup := utc("2026-01-03T05:17:00Z"); signup.Before(utc("2026-12-20T00:00:00Z")); signup = signup.Add(9*24*time.Hour + 7*time.Hour) {
			loc, _ := f.Location(name)
			in := Input{SignupAt: signup, TrialExpiresAt: signup.AddDate(0, 0, 14), TimeZone: name}
			var (
				queued  time.Time // the pending message's send time
				sent    []string
				sentDay = map[civilDay]bool{}
			)
			for now := signup; ; now = now.Add(15 * time.Minute) {
				if in.Pending != "" && !now.Before(queued) {
					in.Pending, in.LastSentAt = "", queued // delivered
				}
				d := f.Decide(in, now)
				switch d.Event {
				case EventSend:
					local := d.SendAt.In(loc)
					if m := local.Hour()*60 + local.Minute(); m < 9*60 || m >= 18*60 || sentDay[dayOf(local)] || d.SendAt.Before(d.DueAt) {
						t.Fatalf("%s signup %s: %s at %s (due %s)", name, signup, d.Step, local, d.DueAt)
					}
					sentDay[dayOf(local)] = true
					sent = append(sent, d.Step)
					in.Pending, queued = d.Step, d.SendAt
					in.Marketing = append(in.Marketing, d.SendAt)
				case EventSkip:
					sent = append(sent, "-"+d.Step)
				case EventComplete:
				case "":
					if d.Problem != "" {
						t.Fatal(d.Problem)
					}
				default:
					t.Fatalf("%s signup %s: %s", name, signup, d.Event)
				}
				if d.Event != "" {
					m := f.Machine()
					if !m.Can(stateOf(in.Case), d.Event) {
						t.Fatalf("cannot %s from %s", d.Event, stateOf(in.Case))
					}
					fsm := m.FSM(stateOf(in.Case), nil)
					if err := fsm.Event(t.Context(), d.Event); err != nil {
						t.Fatal(err)
					}
					in.Case = &Case{State: fsm.Current()}
				}
				if in.Case != nil && in.Case.State == StateCompleted {
					break
				}
				if now.Sub(signup) > 30*24*time.Hour {
					t.Fatalf("%s signup %s: not complete after 30 days: %v", name, signup, sent)
				}
			}
			if got := strings.Join(sent, " "); got != "welcome first_vm tips trial_ending last_call" {
				t.Fatalf("%s signup %s: %s", name, signup, got)
			}
		}
	}
}
