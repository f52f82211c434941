package drip

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cronkit/cronkit/lib/cases"
)

// Case is a persisted funnel case as decisions and operators see it: lib/cases keeps
// it. Its State is a step name (the account is at that step) or a closed state.
type Case = cases.Case

// Exit reasons: why an account left the funnel without converting.
const (
	ExitTerminated   = "terminated"   // accounts.status
	ExitSuspended    = "suspended"    // accounts.status
	ExitBounced      = "bounced"      // the address hard-bounced (or is suppressed for another reason)
	ExitComplaint    = "complaint"    // the recipient marked our mail as spam
	ExitUnsubscribed = "unsubscribed" // one-click, mailto or by ops
	ExitOpenCase     = "open_case"    // an open abuse or dunning case
	ExitOperator     = "operator"     // cronkit drip exit ACCOUNT --reason TEXT
)

// Suppression reasons (mail_suppressions.reason) that mean something to the funnel.
const (
	SuppressedBounce      = "bounce"
	SuppressedComplaint   = "complaint"
	SuppressedUnsubscribe = "unsubscribe"
)

// Facts is what the funnel knows about an account when it decides. The first five
// are the facts a step's `unless` may name.
type Facts struct {
	HasVM                 bool `json:"has_vm"`
	PaymentMethodVerified bool `json:"payment_method_verified"`
	PaidInvoice           bool `json:"paid_invoice"`
	TrialCreditLeft       bool `json:"trial_credit_left"`
	Unsubscribed          bool `json:"unsubscribed"`
	// AccountStatus is accounts.status: "suspended" and "terminated" exit.
	AccountStatus string `json:"account_status"`
	// OpenCases are the machines of the account's open enforcement cases (abuse's
	// "dunning", "free_credit"): any exits, since a funnel that sells to an account
	// being dunned or investigated is wrong twice.
	OpenCases []string `json:"open_cases,omitempty"`
	// Suppression is the address's mail_suppressions reason ("" when none). Any
	// suppression exits: SuppressedUnsubscribe as unsubscribed, SuppressedComplaint
	// as a complaint, anything else as a hard bounce.
	Suppression string `json:"suppression,omitempty"`
}

// fact returns the fact an `unless` names (validated at parse time).
func (x Facts) fact(name string) bool {
	switch name {
	case FactHasVM:
		return x.HasVM
	case FactPaymentMethodVerified:
		return x.PaymentMethodVerified
	case FactPaidInvoice:
		return x.PaidInvoice
	case FactTrialCreditLeft:
		return x.TrialCreditLeft
	case FactUnsubscribed:
		return x.Unsubscribed
	}
	return false
}

// Input is everything Decide reads about one signup.
type Input struct {
	// Case is the account's latest case of the funnel's machine, open or closed: a
	// closed one keeps the account out for good. Nil: it never entered.
	Case     *Case
	Facts    Facts
	SignupAt time.Time
	// TrialExpiresAt is when the trial credit expires; zero means no trial credit,
	// and steps from trial_expiry are skipped.
	TrialExpiresAt time.Time
	// TimeZone is accounts.time_zone; empty or invalid means the fallback zone.
	TimeZone string
	// LastSentAt is when the latest message of this funnel to the account was
	// delivered (zero: none yet): `from = "previous"` counts from it.
	LastSentAt time.Time
	// Pending names the step whose message is queued or being sent, not delivered
	// yet ("" when none): the next step waits for it, so one funnel message at most
	// is ever in flight.
	Pending string
	// Marketing are the send times of the recipient's marketing messages of every
	// campaign, delivered (sent_at) or queued (when they may go out), from at least
	// 48 hours before now: the daily cap counts them per local day.
	Marketing []time.Time
}

// Decision is what Decide returns: the event to fire ("" for none), why, and, for a
// step, when it is due and when its message may go out.
type Decision struct {
	Event  string
	Reason string
	// Step is the step sent or skipped, or the next one for a wait.
	Step string
	// Exit is why an EventExit leaves (Exit*).
	Exit string
	// DueAt is when Step is due (zero when not known yet).
	DueAt time.Time
	// SendAt is, for EventSend, when delivery may start: the due time (or now, if
	// later) moved into the send window and past full days. For a wait it is the
	// projection on today's facts, zero when unknown.
	SendAt time.Time
	// Location is the recipient's zone as used; ZoneFallback says it is the funnel's
	// fallback because AccountTimeZone is empty or invalid (the job reports it).
	Location        *time.Location
	ZoneFallback    bool
	AccountTimeZone string
	// Problem is set when the case is in a state this funnel does not have (the
	// funnel file changed under open cases): nothing is done, an operator must look.
	Problem  string
	Evidence Evidence
}

// Evidence is recorded with every funnel transition: the facts behind it.
type Evidence struct {
	Funnel          string     `json:"funnel"`
	Goal            string     `json:"goal"`
	Step            string     `json:"step,omitempty"`
	Exit            string     `json:"exit,omitempty"`
	Facts           Facts      `json:"facts"`
	TimeZone        string     `json:"time_zone"`
	AccountTimeZone string     `json:"account_time_zone,omitempty"`
	DueAt           *time.Time `json:"due_at,omitempty"`
	SendAt          *time.Time `json:"send_at,omitempty"`
	LocalTime       string     `json:"local_time,omitempty"`
}

// Cases is the decision as lib/cases records it.
func (d Decision) Cases() cases.Decision {
	return cases.Decision{Event: d.Event, Reason: d.Reason, Evidence: d.Evidence}
}

// Stop is the goal and exit check. Decide asks it first; delivery asks it again when
// it claims a queued funnel message, so a message queued before the account
// converted or left is cancelled, never sent after. An exit outranks the goal: a
// suspended account with a verified card did not convert in any sense the funnel
// cares about. event is "" when the account carries on.
func (f *Funnel) Stop(x Facts) (event, exit, reason string) {
	switch {
	case x.AccountStatus == "terminated":
		return EventExit, ExitTerminated, "account terminated"
	case x.AccountStatus == "suspended":
		return EventExit, ExitSuspended, "account suspended"
	case x.Suppression == SuppressedComplaint:
		return EventExit, ExitComplaint, "the recipient complained (marked our mail as spam)"
	case x.Suppression == SuppressedUnsubscribe || x.Unsubscribed:
		return EventExit, ExitUnsubscribed, "unsubscribed from marketing mail"
	case x.Suppression != "":
		return EventExit, ExitBounced, fmt.Sprintf("address suppressed (%s)", x.Suppression)
	case len(x.OpenCases) > 0:
		return EventExit, ExitOpenCase, fmt.Sprintf("open %s case", strings.Join(x.OpenCases, " and "))
	case f.Goal == GoalPaymentMethodVerified && x.PaymentMethodVerified:
		return EventConvert, "", "goal met: payment method verified"
	case f.Goal == GoalPaidInvoice && x.PaidInvoice:
		return EventConvert, "", "goal met: first invoice paid"
	}
	return "", "", ""
}

// Decide is the funnel decision for one signup: a pure function of the input, the
// instant and the funnel, returning the event to fire.
//
//   - A closed case (converted, exited, completed) does nothing: no re-entry.
//   - Exits, then the goal, close the case from any step, ahead of any step due.
//   - A step whose message is still queued or being sent holds the next one.
//   - After the last step: complete.
//   - The next step waits until due (its anchor plus its delay, whole days counted in
//     the recipient's zone); when due, a true `unless` fact skips it, as does a step
//     before the trial's expiry that could not go out before the trial ends;
//     otherwise it is sent, with the send time after the window and the daily cap.
func (f *Funnel) Decide(in Input, now time.Time) Decision {
	loc, fallback := f.Location(in.TimeZone)
	d := Decision{Location: loc, ZoneFallback: fallback, AccountTimeZone: in.TimeZone}
	f.decide(&d, in, now.UTC())
	d.Evidence = Evidence{Funnel: f.Name, Goal: f.Goal, Step: d.Step, Exit: d.Exit, Facts: in.Facts,
		TimeZone: loc.String(), DueAt: utcPtr(d.DueAt), SendAt: utcPtr(d.SendAt)}
	if fallback {
		d.Evidence.AccountTimeZone = fmt.Sprintf("%q (invalid or empty: fallback zone used)", in.TimeZone)
	}
	if !d.SendAt.IsZero() {
		d.Evidence.LocalTime = d.SendAt.In(loc).Format(time.RFC3339)
	}
	return d
}

func (f *Funnel) decide(d *Decision, in Input, now time.Time) {
	pos := -1
	if in.Case != nil {
		_, i, ok := f.Step(in.Case.State)
		switch {
		case ok:
			pos = i
		case slices.Contains(closedStates, in.Case.State):
			d.Reason = fmt.Sprintf("left the funnel (%s): an account goes through it once", in.Case.State)
			return
		default:
			d.Problem = fmt.Sprintf("case %d is in state %q, which funnel %s does not have", in.Case.ID, in.Case.State, f.Name)
			d.Reason = d.Problem
			return
		}
	}
	if ev, exit, reason := f.Stop(in.Facts); ev != "" {
		d.Event, d.Exit, d.Reason = ev, exit, reason
		return
	}
	if in.Pending != "" {
		d.Reason = fmt.Sprintf("step %s is queued, not delivered yet", in.Pending)
		return
	}
	if pos == len(f.Steps)-1 {
		d.Event, d.Reason = EventComplete, fmt.Sprintf("after the last step, %s", f.Steps[pos].Name)
		return
	}
	s := f.Steps[pos+1]
	d.Step = s.Name
	var anchor time.Time
	switch s.From {
	case FromSignup:
		anchor = in.SignupAt
	case FromPrevious:
		anchor = in.LastSentAt
		if anchor.IsZero() {
			anchor = in.SignupAt
		}
	case FromTrialExpiry:
		if in.TrialExpiresAt.IsZero() {
			d.Event, d.Reason = EventSkip, "no trial credit"
			return
		}
		anchor = in.TrialExpiresAt
	}
	d.DueAt = s.After.from(anchor, d.Location)
	if now.Before(d.DueAt) {
		d.SendAt = f.sendTime(d.DueAt, d.Location, in.Marketing)
		d.Reason = fmt.Sprintf("%s due %s", s.Name, localText(d.DueAt, d.Location))
		return
	}
	for _, fact := range s.Unless {
		if in.Facts.fact(fact) {
			d.Event, d.Reason = EventSkip, fmt.Sprintf("%s: %s", s.Name, fact)
			return
		}
	}
	d.SendAt = f.sendTime(later(d.DueAt, now), d.Location, in.Marketing)
	if s.From == FromTrialExpiry && s.After.negative() && !d.SendAt.Before(in.TrialExpiresAt) {
		d.Event = EventSkip
		d.Reason = fmt.Sprintf("%s: the trial ends %s, before the message could go out (%s)",
			s.Name, localText(in.TrialExpiresAt, d.Location), localText(d.SendAt, d.Location))
		d.SendAt = time.Time{}
		return
	}
	d.Event = EventSend
	d.Reason = fmt.Sprintf("%s due %s, sending %s", s.Name, localText(d.DueAt, d.Location), localText(d.SendAt, d.Location))
}

// localText writes an instant as the recipient reads it: "2026-03-09 09:00 CET".
func localText(t time.Time, loc *time.Location) string {
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func utcPtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}
