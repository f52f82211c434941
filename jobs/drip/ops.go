package drip

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mail"
)

// ErrNoAccount is returned for an account id that does not exist.
var ErrNoAccount = errors.New("no such account")

// Result is what an operator's or a recipient's action did to an account's funnel.
type Result struct {
	AccountID int64  `json:"account_id"`
	Email     string `json:"email"`
	// Suppressed is set when the address was added to the suppression list now
	// (false: it already was, or the action does not suppress).
	Suppressed bool `json:"suppressed,omitempty"`
	// Case is the funnel case after the action (nil: the account has none).
	Case  *Case  `json:"case,omitempty"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
	Event string `json:"event,omitempty"`
	// Reason says why nothing changed when Event is empty.
	Reason string `json:"reason,omitempty"`
}

// exitDecision is an exit of s for exit reason, with the facts as evidence.
func (j *Job) exitDecision(s *signup, exit, reason string) Decision {
	loc, _ := j.Funnel.Location(s.timeZone)
	d := Decision{Event: EventExit, Exit: exit, Reason: reason, Location: loc}
	d.Evidence = Evidence{Funnel: j.Funnel.Name, Goal: j.Funnel.Goal, Exit: exit, Facts: s.facts(), TimeZone: loc.String()}
	return d
}

// closeCase applies one closing decision to account's funnel case outside a run: in
// one transaction, under the lock on the account row, before runs (an unsubscribe
// records the suppression there), the facts are read and decide says what to fire
// ("" for nothing). The account's next look is set to never when the case closes.
func (j *Job) closeCase(ctx context.Context, account int64, actor string,
	before func(ctx context.Context, tx *sql.Tx, s *signup) error, decide func(s *signup) Decision) (Result, error) {
	now := j.now()
	store := j.store(now, false)
	machine := j.Funnel.MachineName()
	var out Result
	for attempt := 0; attempt < 3; attempt++ {
		m, err := j.loadSignups(ctx, j.DB, []int64{account}, now, loadOptions{stopOnly: true})
		if err != nil {
			return out, err
		}
		s := m[account]
		if s == nil {
			return out, fmt.Errorf("account %d: %w", account, ErrNoAccount)
		}
		var expect *Case
		if open, err := store.OpenCases(ctx, j.DB, machine, []int64{account}); err != nil {
			return out, err
		} else {
			expect = open[account]
		}
		out = Result{AccountID: account, Email: s.email, Case: s.c}
		var decided Decision
		res, err := store.Apply(ctx, cases.Request{
			Machine: machine, AccountID: account, Expect: expect, Actor: actor,
			Before: func(ctx context.Context, tx *sql.Tx) error {
				if before == nil {
					return nil
				}
				return before(ctx, tx, s)
			},
			Decide: func(ctx context.Context, q cases.Querier, _ *cases.Case) (cases.Decision, error) {
				m, err := j.loadSignups(ctx, q, []int64{account}, now, loadOptions{stopOnly: true})
				if err != nil {
					return cases.Decision{}, err
				}
				if m[account] == nil {
					return cases.Decision{}, fmt.Errorf("account %d: %w", account, ErrNoAccount)
				}
				s = m[account]
				decided = decide(s)
				return decided.Cases(), nil
			},
			Effects: func(ctx context.Context, ch *cases.Change) error {
				if !j.Funnel.Machine().IsOpen(ch.To) {
					return setCheck(ctx, ch.Tx, j.Funnel.Name, account, nil)
				}
				return nil
			},
		})
		if errors.Is(err, cases.ErrConflict) {
			continue
		}
		if err != nil {
			return out, err
		}
		out.Email = s.email
		if res.Event == "" {
			out.Case, out.Reason = s.c, decided.Reason
			if out.Reason == "" {
				out.Reason = res.Reason
			}
			return out, nil
		}
		out.Case, out.From, out.To, out.Event = res.Case, res.From, res.To, res.Event
		return out, nil
	}
	return out, fmt.Errorf("account %d: %w (three times): try again", account, cases.ErrConflict)
}

// Unsubscribe records a recipient's unsubscribe from the unsubscribe handler (RFC
// 8058 one-click, or the page's button): it implements mail.Unsubscriber. In one
// transaction the account's address is suppressed for marketing (every campaign; its
// invoices and notices still go out) and its open funnel case exits. It is idempotent;
// a token of an account that no longer exists is answered as done.
func (j *Job) Unsubscribe(ctx context.Context, req mail.UnsubscribeRequest) error {
	how, actor := "the unsubscribe page", "recipient:page"
	if req.OneClick {
		how, actor = "one-click unsubscribe (RFC 8058)", "recipient:one-click"
	}
	_, err := j.UnsubscribeAccount(ctx, req.AccountID, actor, how+", list "+req.List)
	if errors.Is(err, ErrNoAccount) {
		zerolog.Ctx(ctx).Warn().Int64("account_id", req.AccountID).Msg("unsubscribe for an account that does not exist: nothing to do")
		return nil
	}
	return err
}

var _ mail.Unsubscriber = (*Job)(nil)

// UnsubscribeAccount suppresses account's address for marketing and exits its open
// funnel case, in one transaction; actor and how are kept with both.
func (j *Job) UnsubscribeAccount(ctx context.Context, account int64, actor, how string) (Result, error) {
	added := false
	res, err := j.closeCase(ctx, account, actor,
		func(ctx context.Context, tx *sql.Tx, s *signup) error {
			var err error
			added, err = j.outbox().Suppress(ctx, tx, s.email, mail.SuppressUnsubscribe, cut(how+" by "+actor, 255))
			return err
		},
		func(s *signup) Decision {
			if s.c == nil || s.c.ClosedAt != nil {
				return Decision{Reason: "no open funnel case (the suppression keeps every campaign's marketing away)"}
			}
			return j.exitDecision(s, ExitUnsubscribed, "unsubscribed: "+how)
		})
	res.Suppressed = added
	return res, err
}

// UnsubscribeAddress is `cronkit drip unsubscribe EMAIL`: the address is suppressed for
// marketing (even if no account has it, so a mailto request is honoured for good), and
// the funnel case of every account with that address exits.
func (j *Job) UnsubscribeAddress(ctx context.Context, email, actor, how string) ([]Result, error) {
	added, err := j.outbox().Suppress(ctx, nil, email, mail.SuppressUnsubscribe, cut(how+" by "+actor, 255))
	if err != nil {
		return nil, err
	}
	rows, err := j.DB.QueryContext(ctx, queryAccountsByEmail, email)
	if err != nil {
		return nil, fmt.Errorf("accounts of %s: %w", email, err)
	}
	var ids []int64
	if err := scanRows(rows, func(rows *sql.Rows) error {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		ids = append(ids, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("accounts of %s: %w", email, err)
	}
	out := []Result{}
	if len(ids) == 0 {
		return []Result{{Email: email, Suppressed: added, Reason: "no account has this address"}}, nil
	}
	for _, id := range ids {
		res, err := j.UnsubscribeAccount(ctx, id, actor, how)
		if err != nil {
			return out, err
		}
		res.Suppressed = res.Suppressed || added
		out = append(out, res)
	}
	return out, nil
}

// Exit is `cronkit drip exit ACCOUNT --reason TEXT`: the account leaves the funnel for
// good (an account that never entered is kept out); its queued message, if any, is
// cancelled when delivery claims it.
func (j *Job) Exit(ctx context.Context, account int64, operator, reason string) (Result, error) {
	return j.closeCase(ctx, account, "operator:"+operator, nil, func(s *signup) Decision {
		if s.c != nil && s.c.ClosedAt != nil {
			return Decision{Reason: fmt.Sprintf("the funnel case is %s already: nothing to do", s.c.State)}
		}
		return j.exitDecision(s, ExitOperator, fmt.Sprintf("exit by %s: %s", operator, reason))
	})
}

// Requeue puts one of the funnel's messages stuck in 'sending' (or failed) back in
// the queue, for an operator who checked the relay's log: it was not delivered.
func (j *Job) Requeue(ctx context.Context, outboxID int64) error {
	return j.outbox().Requeue(ctx, outboxID)
}

// MessageRecord is one funnel message of an account, as `show` lists it.
type MessageRecord struct {
	ID        int64      `json:"id"`
	Key       string     `json:"key"`
	Step      string     `json:"step"`
	Subject   string     `json:"subject"`
	Status    string     `json:"status"`
	Attempts  int        `json:"attempts"`
	SendAt    time.Time  `json:"send_at"`
	ClaimedAt *time.Time `json:"claimed_at,omitempty"`
	SentAt    *time.Time `json:"sent_at,omitempty"`
	LastError string     `json:"last_error,omitempty"`
}

// View is one account in the funnel, for `cronkit drip show ACCOUNT`: the account, its
// facts, its case with the audit trail, its messages and what the funnel does next.
type View struct {
	AccountID int64     `json:"account_id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Status    string    `json:"status"`
	TimeZone  string    `json:"time_zone"`
	SignupAt  time.Time `json:"signup_at"`
	Funnel    string    `json:"funnel"`
	// StartedAt is the funnel's start (nil: no real run yet); an account created
	// before it never enters.
	StartedAt *time.Time `json:"funnel_started_at,omitempty"`
	// CheckAt is the account's next look by a run (nil: not enrolled, or left).
	CheckAt      *time.Time         `json:"check_at,omitempty"`
	Facts        Facts              `json:"facts"`
	TrialEndsAt  *time.Time         `json:"trial_expires_at,omitempty"`
	Suppressions []mail.Suppression `json:"suppressions"`
	Cases        []*Case            `json:"cases"`
	Transitions  []cases.Transition `json:"transitions"`
	Messages     []MessageRecord    `json:"messages"`
	// Next is the funnel's decision as of now, on these facts (has_vm from usage).
	Next Decision `json:"-"`
	// NextText is Next in words.
	NextText string `json:"next"`
}

// Show reads everything about one account's funnel. has_vm comes from billed usage
// (no orchestrator call from an operator's look).
func (j *Job) Show(ctx context.Context, account int64) (*View, error) {
	now := j.now()
	f := j.Funnel
	m, err := j.loadSignups(ctx, j.DB, []int64{account}, now, loadOptions{})
	if err != nil {
		return nil, err
	}
	s := m[account]
	if s == nil {
		return nil, fmt.Errorf("account %d: %w", account, ErrNoAccount)
	}
	r := &runState{j: j, now: now, dry: true}
	if err := r.usageVMs(ctx, []*signup{s}); err != nil {
		return nil, err
	}
	v := &View{AccountID: s.id, Email: s.email, Name: s.name, Status: s.status, TimeZone: s.timeZone,
		SignupAt: s.createdAt, Funnel: f.Name, Facts: s.facts(), Suppressions: []mail.Suppression{},
		Transitions: []cases.Transition{}, Messages: []MessageRecord{}}
	if !s.trialExpires.IsZero() {
		t := s.trialExpires
		v.TrialEndsAt = &t
	}
	var started, until time.Time
	switch err := j.DB.QueryRowContext(ctx, queryFunnelStart, f.Name).Scan(&started, &until); {
	case err == nil:
		t := started.UTC()
		v.StartedAt = &t
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("funnel %s start: %w", f.Name, err)
	}
	var at sql.NullTime
	switch err := j.DB.QueryRowContext(ctx, queryCheckAt, f.Name, account).Scan(&at); {
	case err == nil:
		if at.Valid {
			t := at.Time.UTC()
			v.CheckAt = &t
		}
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("next look of account %d: %w", account, err)
	}
	if s.address != "" {
		if v.Suppressions, err = j.outbox().Suppressions(ctx, nil, s.address); err != nil {
			return nil, err
		}
		if v.Suppressions == nil {
			v.Suppressions = []mail.Suppression{}
		}
	}
	store := j.store(now, true)
	if v.Cases, err = store.CasesOf(ctx, j.DB, account); err != nil {
		return nil, err
	}
	if len(v.Cases) > 0 {
		if v.Transitions, err = store.Transitions(ctx, j.DB, v.Cases[0].ID); err != nil {
			return nil, err
		}
	}
	keys := make([]any, len(f.Steps))
	for i, st := range f.Steps {
		keys[i] = f.messageKey(account, st.Name)
	}
	rows, err := j.DB.QueryContext(ctx, fmt.Sprintf(queryMessagesOf, inList(len(keys))), keys...)
	if err != nil {
		return nil, fmt.Errorf("messages of account %d: %w", account, err)
	}
	if err := scanRows(rows, func(rows *sql.Rows) error {
		var mr MessageRecord
		var claimed, sent sql.NullTime
		if err := rows.Scan(&mr.ID, &mr.Key, &mr.Status, &mr.Attempts, &mr.SendAt, &claimed, &sent, &mr.LastError, &mr.Subject); err != nil {
			return err
		}
		_, mr.Step, _ = f.parseKey(mr.Key)
		mr.SendAt = mr.SendAt.UTC()
		if claimed.Valid {
			t := claimed.Time.UTC()
			mr.ClaimedAt = &t
		}
		if sent.Valid {
			t := sent.Time.UTC()
			mr.SentAt = &t
		}
		v.Messages = append(v.Messages, mr)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("messages of account %d: %w", account, err)
	}
	v.Next = f.Decide(s.input(), now)
	v.NextText = nextText(v, now)
	return v, nil
}

// nextText says what the funnel does next with the account, in words.
func nextText(v *View, now time.Time) string {
	d := v.Next
	switch {
	case v.StartedAt != nil && v.SignupAt.Before(*v.StartedAt) && len(v.Cases) == 0:
		return fmt.Sprintf("never enters: signed up before the funnel started (%s)", v.StartedAt.Format(time.RFC3339))
	case d.Problem != "":
		return "PROBLEM: " + d.Problem
	case d.Event == "":
		return d.Reason
	case d.Event == EventSend:
		return fmt.Sprintf("send %s: %s (local %s)", d.Step, d.Reason, d.SendAt.In(d.Location).Format(time.RFC3339))
	}
	return fmt.Sprintf("%s: %s", d.Event, d.Reason)
}

// WriteText renders the view for people.
func (v *View) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	name := ""
	if v.Name != "" {
		name = " (" + v.Name + ")"
	}
	fmt.Fprintf(tw, "account %d  %s%s  status %s  time zone %s  signed up %s\n", v.AccountID, v.Email, name, v.Status,
		v.TimeZone, v.SignupAt.Format(time.RFC3339))
	started := "not started (no real run yet)"
	if v.StartedAt != nil {
		started = "started " + v.StartedAt.Format(time.RFC3339)
	}
	look := "none"
	if v.CheckAt != nil {
		look = v.CheckAt.Format(time.RFC3339)
	}
	fmt.Fprintf(tw, "funnel %s  %s  next look %s\n", v.Funnel, started, look)
	fx := v.Facts
	fmt.Fprintf(tw, "facts: has_vm=%t (from usage) payment_method_verified=%t paid_invoice=%t trial_credit_left=%t unsubscribed=%t",
		fx.HasVM, fx.PaymentMethodVerified, fx.PaidInvoice, fx.TrialCreditLeft, fx.Unsubscribed)
	if len(fx.OpenCases) > 0 {
		fmt.Fprintf(tw, " open_cases=%s", strings.Join(fx.OpenCases, ","))
	}
	if v.TrialEndsAt != nil {
		fmt.Fprintf(tw, " trial_expires=%s", v.TrialEndsAt.Format(time.RFC3339))
	}
	fmt.Fprintln(tw)
	for _, s := range v.Suppressions {
		fmt.Fprintf(tw, "suppressed: %s since %s (%s)\n", s.Kind, s.CreatedAt.Format(time.RFC3339), s.Reason)
	}
	fmt.Fprintf(tw, "next: %s\n", v.NextText)
	if len(v.Cases) == 0 {
		fmt.Fprintf(tw, "\nno funnel case\n")
	}
	for _, c := range v.Cases {
		closed := ""
		if c.ClosedAt != nil {
			closed = "  closed " + c.ClosedAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "\ncase %d  %s  %s  (version %d)  opened %s%s\n", c.ID, c.Machine, c.State, c.Version,
			c.OpenedAt.Format(time.RFC3339), closed)
	}
	if len(v.Transitions) > 0 {
		fmt.Fprintf(tw, "\nAT\tTRANSITION\tBY\tREASON\n")
		for _, t := range v.Transitions {
			fmt.Fprintf(tw, "%s\t%s -> %s (%s)\t%s\t%s\n", t.At.Format(time.RFC3339), t.From, t.To, t.Event, t.Actor, oneLine(t.Reason))
		}
	}
	if len(v.Messages) > 0 {
		fmt.Fprintf(tw, "\nOUTBOX\tSTEP\tSTATUS\tSEND AT\tSENT AT\tSUBJECT\n")
		for _, m := range v.Messages {
			sent := "-"
			if m.SentAt != nil {
				sent = m.SentAt.Format(time.RFC3339)
			}
			status := m.Status
			if m.LastError != "" {
				status += " (" + oneLine(m.LastError) + ")"
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Step, status, m.SendAt.Format(time.RFC3339), sent, m.Subject)
		}
	}
	return tw.Flush()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// cut keeps at most n bytes of s, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	for len(string(r)) > n {
		r = r[:len(r)-1]
	}
	return string(r)
}
