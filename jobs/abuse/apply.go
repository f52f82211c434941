package abuse

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/rs/zerolog"

	"github.com/cronkit/cronkit/lib/cases"
	"github.com/cronkit/cronkit/lib/mail"
	"github.com/cronkit/cronkit/lib/run"
)

// ActorJob is the actor recorded for the transitions a run makes; operators are
// recorded as "operator:<name>".
const ActorJob = "cronkit"

// evaluator decides for one account: with fresh it re-reads the facts through q (the
// transaction about to act) instead of using the plan's.
type evaluator func(ctx context.Context, q querier, c *Case, fresh bool) (evaluation, error)

// evaluation is a decision plus who it concerns.
type evaluation struct {
	Decision
	subject subject
}

// subject is where the side effects of a transition go: the recipient of its notice
// and the orchestrator account.
type subject struct {
	email      string
	cloudstack string
	notice     noticeData
}

// noticeData is what the notice templates may use; every field is always set, so a
// template can never hit a missing key.
type noticeData struct {
	Name          string
	Email         string
	AccountID     int64
	CaseID        int64
	Amount        string
	Invoices      int
	OldestInvoice int64
	DueDate       string
	DaysLate      int
	SuspendOn     string
	BillingURL    string
	SupportEmail  string
}

// transitionReq asks for one transition.
type transitionReq struct {
	machine string
	account int64
	// caseID names the case (operator commands); 0 means the open case of (machine,
	// account), which must still be expect (nil: none), or the plan is stale.
	caseID int64
	expect *Case
	event  string
	eval   evaluator
	actor  string
	runID  string
	// before runs first in the transaction (not in a dry run): an operator's exclude
	// tags the account in the same commit as the transition.
	before func(ctx context.Context, tx *sql.Tx) error
}

// applied is what apply did.
type applied struct {
	c        *Case
	from, to string
	event    string // "" when the fresh decision was to do nothing
	reason   string
	conflict bool
}

// notice is a rendered mail and its outbox key.
type notice struct {
	Key  string       `json:"key"`
	Step string       `json:"step"`
	Msg  mail.Message `json:"message"`
}

func caseLabel(machine string, id int64) string {
	if id == 0 {
		return machine + " case new"
	}
	return fmt.Sprintf("%s case %d", machine, id)
}

// apply applies one event through the case store (lib/cases): one transaction that
// locks the case (or the account, for a new case), checks the plan is not stale,
// re-reads the facts and decides again (a different decision wins; "nothing" means
// nothing), and writes the case, the transition, its actions and any immediate
// notice. In a dry run the same steps read through the pool and only report.
func (r *runState) apply(ctx context.Context, req transitionReq) (applied, error) {
	var subj subject // who the latest decision concerns: its side effects go there
	res, err := r.store.Apply(ctx, cases.Request{
		Machine: req.machine, AccountID: req.account, CaseID: req.caseID, Expect: req.expect,
		Actor: req.actor, RunID: req.runID, Before: req.before,
		Decide: func(ctx context.Context, q cases.Querier, c *Case) (Decision, error) {
			ev, err := req.eval(ctx, q, c, true)
			subj = ev.subject
			return ev.Decision, err
		},
		Effects: func(ctx context.Context, ch *cases.Change) error { return r.effects(ctx, ch, subj) },
	})
	if errors.Is(err, cases.ErrConflict) {
		return applied{conflict: true}, nil
	}
	if err != nil {
		return applied{}, err
	}
	if res.Event == "" {
		return applied{reason: res.Reason}, nil
	}
	c := res.Case
	fields := append(caseFields(c.AccountID, c.ID, c.Machine), run.Str("from", res.From), run.Str("to", res.To),
		run.Str("event", res.Event), run.Str("actor", req.actor), run.Time("at", c.StateSince))
	r.act("transition", accountSubject(c.AccountID),
		fmt.Sprintf("%s: %s -> %s (%s): %s", caseLabel(c.Machine, c.ID), res.From, res.To, res.Event, res.Reason), fields...)
	r.count("transitions", 1)
	// A line per case: at info under cron, demoted while a progress bar shows.
	run.Item(ctx).Int64("case_id", c.ID).Str("from", res.From).Str("to", res.To).Str("event", res.Event).
		Str("actor", req.actor).Str("reason", res.Reason).Msg("transition")
	if r.dry {
		r.mu.Lock()
		r.planned = append(r.planned, res.Actions...)
		if res.Cancelled && c.ID != 0 {
			if r.cancelled == nil {
				r.cancelled = map[int64]bool{}
			}
			r.cancelled[c.ID] = true
		}
		r.mu.Unlock()
	}
	return applied{c: c, from: res.From, to: res.To, event: res.Event, reason: res.Reason}, nil
}

// mailed reports a notice queued (or planned).
func (r *runState) mailed(account, caseID int64, machine string, n *notice, queued bool) {
	detail := fmt.Sprintf("%s notice to %s (%s)", n.Step, n.Msg.To, n.Key)
	if !queued {
		detail += ": already queued before"
	}
	fields := append(caseFields(account, caseID, machine), run.Str("step", n.Step), run.Str("email", n.Msg.To),
		run.Str("mail_key", n.Key))
	r.act("mail", accountSubject(account), detail, fields...)
	if queued {
		r.count("mail_queued", 1)
	}
}

// setAccountStatus mirrors the enforcement state in accounts.status (read by
// reconcile and the console): suspended, active again, or terminated.
func setAccountStatus(ctx context.Context, tx *sql.Tx, account int64, status string) error {
	var query string
	switch status {
	case "suspended":
		query = `UPDATE accounts SET status = 'suspended' WHERE id = ? AND status = 'active'`
	case "active":
		query = `UPDATE accounts SET status = 'active' WHERE id = ? AND status = 'suspended'`
	case "terminated":
		query = `UPDATE accounts SET status = 'terminated' WHERE id = ?`
	default:
		return fmt.Errorf("account status %q", status)
	}
	if _, err := tx.ExecContext(ctx, query, account); err != nil {
		return fmt.Errorf("set account %d %s: %w", account, status, err)
	}
	return nil
}

// effects records the side effects of a transition in its transaction (ch.Tx; nil in
// a dry run): the orchestrator actions and notices as pending actions, the account's
// status, and a notice that needs no orchestrator call straight into the outbox.
func (r *runState) effects(ctx context.Context, ch *cases.Change, s subject) error {
	c := ch.Case
	s.notice.CaseID = c.ID
	status, n, err := r.decideEffects(ctx, ch, s)
	if err != nil {
		return err
	}
	if ch.Tx == nil {
		if n != nil {
			ch.AfterCommit(func() { r.mailed(c.AccountID, c.ID, c.Machine, n, true) })
		}
		return nil
	}
	if status != "" {
		if err := setAccountStatus(ctx, ch.Tx, c.AccountID, status); err != nil {
			return err
		}
	}
	if n != nil {
		queued, err := r.j.Outbox.Enqueue(ctx, ch.Tx, n.Key, n.Msg)
		if err != nil {
			return err
		}
		ch.AfterCommit(func() { r.mailed(c.AccountID, c.ID, c.Machine, n, queued) })
	}
	return nil
}

// decideEffects decides the side effects of a transition (pure but for reads of what
// the other machine holds and what cronkit did to the account): it records actions on
// ch and returns the accounts.status to set ("" none) and a notice to queue at once
// (nil none).
func (r *runState) decideEffects(ctx context.Context, ch *cases.Change, s subject) (string, *notice, error) {
	c, from, to, event := ch.Case, ch.From, ch.To, ch.Decision.Event
	cs := s.cloudstack
	var immediate *notice
	withNotice := func(step string) error {
		n, err := r.notice(ctx, c, step, s)
		if err != nil || n == nil {
			return err
		}
		hasCalls := false
		for _, a := range ch.Actions() {
			hasCalls = hasCalls || a.Name != actNotify
		}
		if !hasCalls {
			immediate = n
			return nil
		}
		// A notice that announces an orchestrator change waits for it: an action
		// after the calls.
		payload, err := json.Marshal(n)
		if err != nil {
			return fmt.Errorf("notice payload: %w", err)
		}
		ch.Act(9, actNotify, n.Msg.To, payload)
		return nil
	}
	switch {
	case event == EventRemind, event == EventWarn:
		step := noticeReminder
		if event == EventWarn {
			step = noticeWarning
		}
		if err := withNotice(step); err != nil {
			return "", nil, err
		}
		return "", immediate, nil
	case event == EventSuspend:
		if cs == "" {
			ch.Note("; no orchestrator account: nothing to stop")
		} else {
			ch.Act(1, actStopVMs, cs, nil)
			ch.Act(3, actDisableAccount, cs, nil)
		}
		step := noticeSuspension
		if c.Machine == FreeCredit {
			step = noticeTrialSuspension
		}
		if err := withNotice(step); err != nil {
			return "", nil, err
		}
		return "suspended", immediate, nil
	case event == EventTerminate:
		if cs != "" {
			ch.Act(1, actDestroyVMs, cs, nil)
			ch.Act(3, actDisableAccount, cs, nil)
		}
		return "terminated", nil, nil
	case !IsOpen(c.Machine, to):
		ch.CancelPending()
		if !holdsSuspension(c.Machine, from) {
			return "", nil, nil
		}
		other, err := r.otherHold(ctx, ch.Q, c.Machine, c.AccountID)
		if err != nil {
			return "", nil, err
		}
		if other != nil {
			ch.Note(fmt.Sprintf("; account stays suspended: %s case %d is %s", other.Machine, other.ID, other.State))
			return "", nil, nil
		}
		enable, starts, err := r.undoList(ctx, ch.Q, c.AccountID)
		if err != nil {
			return "", nil, err
		}
		// A suspension cancelled before it was carried out or announced (its notice
		// still waits behind its actions) is lifted without a word: the customer
		// never heard of it, and nothing was stopped.
		unannounced, err := r.store.PendingCount(ctx, ch.Q, c.ID, actNotify)
		if err != nil {
			return "", nil, err
		}
		if unannounced > 0 && len(enable) == 0 && len(starts) == 0 {
			ch.Note("; the suspension had not been carried out: nothing to lift")
			return "active", nil, nil
		}
		for _, target := range enable {
			ch.Act(1, actEnableAccount, target, nil)
		}
		for _, vm := range starts {
			ch.Act(2, actStartVM, vm, nil)
		}
		step := noticeLifted
		if c.Machine == FreeCredit {
			step = noticeTrialLifted
		}
		if err := withNotice(step); err != nil {
			return "", nil, err
		}
		return "active", immediate, nil
	}
	return "", nil, nil
}

// otherHold returns the case of the other machine that keeps the account suspended
// (open, or terminated), or nil: lifting one machine's suspension must not undo the
// other's.
func (r *runState) otherHold(ctx context.Context, q querier, machine string, account int64) (*Case, error) {
	list, err := r.store.CasesOf(ctx, q, account)
	if err != nil {
		return nil, err
	}
	for i := len(list) - 1; i >= 0; i-- { // oldest first
		c := list[i]
		if c.Machine != machine && (c.ClosedAt == nil || c.State == StateTerminated) && holdsSuspension(c.Machine, c.State) {
			return c, nil
		}
	}
	return nil, nil
}

// undoList returns what lifting a suspension must restore on an account: the
// orchestrator accounts cronkit disabled and the VMs it stopped, each possibly (an
// attempt was made) and not re-enabled or started since. It covers every case of the
// account, so a VM stopped by one machine is restarted when the last hold is lifted.
func (r *runState) undoList(ctx context.Context, q querier, account int64) (enable, start []string, err error) {
	list, err := r.store.Attempted(ctx, q, account, actStopVM, actStartVM, actDisableAccount, actEnableAccount)
	if err != nil {
		return nil, nil, err
	}
	last := map[string]int64{}
	for _, a := range list {
		last[a.Name+"\x00"+a.Target] = a.LastID
	}
	for _, a := range list {
		switch a.Name {
		case actDisableAccount:
			if last[actEnableAccount+"\x00"+a.Target] < a.LastID {
				enable = append(enable, a.Target)
			}
		case actStopVM:
			if last[actStartVM+"\x00"+a.Target] < a.LastID {
				start = append(start, a.Target)
			}
		}
	}
	sort.Strings(enable)
	sort.Strings(start)
	return enable, start, nil
}

// notice renders a notice for case c. An address mail cannot be sent to is a problem
// in the report, not a reason to hold the transition: nil is returned.
func (r *runState) notice(ctx context.Context, c *Case, step string, s subject) (*notice, error) {
	subj, text, html, err := r.tmpl.Render(step, s.notice)
	if err != nil {
		return nil, fmt.Errorf("render %s notice: %w", step, err)
	}
	id := "new"
	if c.ID != 0 {
		id = fmt.Sprint(c.ID)
	}
	n := &notice{Key: fmt.Sprintf("abuse:%s:case:%s:%s", c.Machine, id, step), Step: step, Msg: mail.Message{
		From: r.j.Config.MailFrom, To: s.email, Subject: subj, Text: text, HTML: html,
		Headers: map[string]string{"X-Cronkit-Case": fmt.Sprintf("%s/%s", c.Machine, id)},
	}}
	if err := n.Msg.Validate(); err != nil {
		r.problem("mail", accountSubject(c.AccountID), fmt.Sprintf("%s notice not sent: %v", step, err),
			append(caseFields(c.AccountID, c.ID, c.Machine), run.Str("step", step))...)
		zerolog.Ctx(ctx).Warn().Err(err).Str("step", step).Msg("notice cannot be sent")
		return nil, nil
	}
	return n, nil
}
